#!/usr/bin/env python3
"""The GPU anchor: Hugging Face transformers running a model folder's Qwen3 backbone with its KV
cache, plus the eight guard heads, in bf16 with PyTorch's sdpa attention, timed the way
`streamguard bench --device cuda` times the GPU backend on the same folder, in the same run.

  python3 scripts/gpu-anchor.py --model DIR --out anchor.json [--positions 100,4000]
      [--streams 64,256] [--prefill 512] [--recompute 512] [--steps 30]

Needs torch and transformers (the GPU machines' image has both); no network. The model is built
and loaded by tools/reference/check_transformers.py (the same code that checks the goldens against
transformers), with attn_implementation "sdpa" and bf16 weights. Figures, each the median of
--steps timed calls after three untimed ones, synchronised with the GPU:

  step_ms[P]       one streamed token at position P, batch 1: the token through the backbone with
                   the cache of P positions (transformers' DynamicCache), then the eight heads on
                   its hidden state; the cache is cropped back to P after each call
  batched[B]       one token for each of B streams at position 100 in one batch (B / step time)
  prefill          P tokens from an empty cache, the heads on every position (tokens/s)
  recompute_ms     the official streaming approach: each token judged by running its whole prefix
                   (--recompute tokens plus the token) without a cache, heads on the last position

The JSON file is rewritten after each figure, so a run cut short keeps what it measured.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "reference"))
from check_transformers import backbone_state_dict, build_model, check_rope, load_tensors, rope_inv_freq  # noqa: E402


def heads_fn(tensors, eps, device):
    """The eight guard heads as one function of the final hidden states [rows, hidden]."""
    t = {k: v.to(device=device, dtype=torch.bfloat16) for k, v in tensors.items()}

    def rms(x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    def run(h):
        out = []
        for pre in ("", "query_"):
            x = rms(h @ t[pre + "risk_level_category_pre.weight"].T, t[pre + "risk_level_category_layernorm.weight"])
            out.append(x @ t[pre + "risk_level_head.weight"].T)
            out.append(x @ t[pre + "category_head.weight"].T)
        return out

    return run


def sync(dev):
    """Waits for the device's queued work (nothing to wait for on the CPU)."""
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, steps, dev):
    """Median milliseconds of steps calls of fn after three untimed ones."""
    for _ in range(3):
        fn()
    sync(dev)
    ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--positions", default="100,4000")
    ap.add_argument("--streams", default="64,256")
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--recompute", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a small model's check of this script)")
    args = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    import transformers

    dev = args.device
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    rep = {
        "torch": torch.__version__, "transformers": transformers.__version__, "device": torch.cuda.get_device_name(torch.device(dev)) if dev.startswith("cuda") else "cpu",
        "model": args.model, "dtype": "bfloat16", "attention": "sdpa", "layers": cfg["num_hidden_layers"],
        "hidden": cfg["hidden_size"], "step_ms": {}, "batched": {},
    }

    def write():
        with open(args.out, "w") as f:
            json.dump(rep, f, indent=2)

    t0 = time.perf_counter()
    tensors = load_tensors(args.model)
    model, _ = build_model(cfg, torch.bfloat16, dev, attn="sdpa")
    sd = {k: v.to(torch.bfloat16) for k, v in backbone_state_dict(tensors).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.to(device=dev, dtype=torch.bfloat16)
    # .to(bfloat16) casts every floating buffer, RoPE's inverse frequencies too; keep them in float32,
    # as a checkpoint loaded in bf16 keeps them, so that positions are rotated as the model defines.
    rot = getattr(model, "rotary_emb", None)
    if rot is not None and hasattr(rot, "inv_freq"):
        rot.inv_freq = torch.from_numpy(rope_inv_freq(cfg)).float().to(dev)
    check_rope(model, cfg)
    heads = heads_fn({k: v for k, v in tensors.items() if not k.startswith("model.")}, float(cfg["rms_norm_eps"]), dev)
    sync(dev)
    rep["load_seconds"] = time.perf_counter() - t0
    rep["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    write()

    gen = torch.Generator(device="cpu").manual_seed(7)
    vocab = cfg["vocab_size"]
    ids = lambda b, n: torch.randint(0, vocab, (b, n), generator=gen).to(dev)  # noqa: E731

    def measure(name, fn):
        try:
            with torch.no_grad():
                fn()
        except Exception as e:  # keep the other figures
            rep.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        write()
        print(name, json.dumps(rep.get("errors", {}).get(name) or "ok"), flush=True)

    def stream_step(batch, pos):
        out = model(input_ids=ids(batch, pos), use_cache=True)
        cache = out.past_key_values
        tok = ids(batch, 1)

        def step():
            o = model(input_ids=tok, past_key_values=cache, use_cache=True)
            heads(o.last_hidden_state[:, -1])
            cache.crop(pos)

        return timed(step, args.steps, dev)

    for p in ints(args.positions):
        measure(f"step@{p}", lambda p=p: rep["step_ms"].__setitem__(str(p), stream_step(1, p)))
    for b in ints(args.streams):
        def batched(b=b):
            ms = stream_step(b, 100)
            rep["batched"][str(b)] = {"ms_per_step": ms, "tokens_per_s": b / ms * 1e3}
        measure(f"batched@{b}", batched)
    if args.prefill > 0:
        def prefill():
            x = ids(1, args.prefill)
            ms = timed(lambda: heads(model(input_ids=x, use_cache=False).last_hidden_state[0]), max(5, args.steps // 3), dev)
            rep["prefill_ms"], rep["prefill_tokens_per_s"] = ms, args.prefill / ms * 1e3
        measure("prefill", prefill)
    if args.recompute > 0:
        def recompute():
            x = ids(1, args.recompute + 1)
            rep["recompute_ms"] = timed(lambda: heads(model(input_ids=x, use_cache=False).last_hidden_state[:, -1]), max(5, args.steps // 3), dev)
            rep["recompute_prefix"] = args.recompute
        measure("recompute", recompute)
    print(json.dumps(rep, indent=2))
    return 1 if rep.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
