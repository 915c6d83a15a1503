#!/usr/bin/env python3
"""Cross-check a golden file against Hugging Face transformers' Qwen3Model.

Needs torch and transformers >= 4.51 (Qwen3Model) and, usually, safetensors
(a transformers dependency); no network. It builds Qwen3Model from the model
folder's config.json, loads the backbone tensors (stripping "model."; AWQ
Linears are dequantized to plain weights), runs every case of the golden
file, applies the 8 guard-head tensors by hand, and prints max abs / rel
errors per output key.

  python3 tools/reference/check_transformers.py --model DIR \
      --golden testdata/golden/tiny-f32-seed1.json.gz [--device cpu|cuda] [--dtype float64|float32]

Expected agreement: transformers computes RMSNorm, softmax and the RoPE
angles in float32 even when the model runs in float64 (its RMSNorm upcasts to
float32 and casts back; inv_freq and the position product are float32), so
errors around 1e-6..1e-4 are normal; --atol (default 1e-3) decides the exit code.
"""

import argparse
import gzip
import inspect
import json
import os
import struct
import sys

import numpy as np
import torch

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]
KEYS = ["hidden", "risk_logits", "category_logits", "query_risk_logits", "query_category_logits"]


# ---------------------------------------------------------------- tensors


def _read_safetensors_numpy(path):
    """Fallback reader when the safetensors package is missing."""
    sizes = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I32": ("<i4", 4), "I64": ("<i8", 8)}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        np_dt, _ = sizes[e["dtype"]]
        lo, hi = e["data_offsets"]
        a = np.frombuffer(data[lo:hi], dtype=np_dt).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(a.copy())
    return out


def read_safetensors(path):
    try:
        from safetensors.torch import load_file
    except ImportError:
        return _read_safetensors_numpy(path)
    return load_file(path, device="cpu")


def load_tensors(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for s in shards:
            out.update(read_safetensors(os.path.join(model_dir, s)))
        return out
    return read_safetensors(os.path.join(model_dir, "model.safetensors"))


def awq_unpack(words):
    u = words.to(torch.int64) & 0xFFFFFFFF
    r, c = u.shape
    out = torch.empty((r, 8 * c), dtype=torch.int64)
    for j in range(8):
        out[:, j::8] = (u >> (4 * AWQ_REVERSE_ORDER[j])) & 0xF
    return out


def awq_dequantize(qweight, qzeros, scales):
    q = awq_unpack(qweight)  # [K, N]
    k = q.shape[0]
    g = k // scales.shape[0]
    z = awq_unpack(qzeros) if qzeros is not None else torch.full_like(scales, 8, dtype=torch.int64)
    idx = torch.arange(k) // g
    w = (q - z[idx]).to(torch.float64) * scales.to(torch.float64)[idx]
    return w.t().contiguous()  # [N, K]


def backbone_state_dict(tensors):
    sd = {}
    for name, t in tensors.items():
        if not name.startswith("model."):
            continue
        key = name[len("model."):]
        if key.endswith(".qweight"):
            p = key[: -len(".qweight")]
            qz = tensors.get("model." + p + ".qzeros")
            sd[p + ".weight"] = awq_dequantize(t, qz, tensors["model." + p + ".scales"])
        elif key.endswith(".qzeros") or key.endswith(".scales"):
            continue
        else:
            sd[key] = t
    return sd


# ---------------------------------------------------------------- model


def build_model(cfg, dtype, device, attn="eager"):
    """Qwen3Model for config.json's fields; attn is the attention implementation (the golden
    check uses eager, the speed anchor scripts/gpu-anchor.py sdpa)."""
    from transformers import Qwen3Config, Qwen3Model

    theta = float(cfg["rope_theta"])
    kw = dict(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
        max_position_embeddings=cfg.get("max_position_embeddings", 8192), rms_norm_eps=cfg["rms_norm_eps"],
        hidden_act="silu", attention_bias=False, attention_dropout=0.0, use_sliding_window=False,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), use_cache=False,
        attn_implementation=attn,
    )
    params = inspect.signature(Qwen3Config.__init__).parameters
    if "rope_parameters" in params:  # transformers 5.x
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    else:
        kw["rope_theta"] = theta
        kw["rope_scaling"] = None
    config = Qwen3Config(**kw)
    try:
        config._attn_implementation = attn
    except Exception:
        pass
    model = Qwen3Model(config)
    model.eval()
    return model.to(device=device, dtype=dtype), config


def rope_inv_freq(cfg):
    """RoPE's inverse frequencies theta^(-2i/head_dim), float64, as the model defines them."""
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return float(cfg["rope_theta"]) ** (-(2.0 * np.arange(hd // 2)) / hd)


def check_rope(model, cfg):
    """Abort if the model did not pick up rope_theta (config spelling differs across versions)."""
    rot = getattr(model, "rotary_emb", None)
    if rot is None or not hasattr(rot, "inv_freq"):
        print("warning: cannot find model.rotary_emb.inv_freq; RoPE theta not verified")
        return
    want = rope_inv_freq(cfg)
    got = rot.inv_freq.detach().to("cpu", torch.float64).numpy()
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=0):
        sys.exit(f"RoPE inv_freq mismatch: model has {got[:4]}..., want {want[:4]}... (rope_theta not applied)")


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def heads(h, tensors, eps):
    t = {k: v.to(device=h.device, dtype=h.dtype) for k, v in tensors.items()}
    out = {}
    for pre, rk, ck in (("", "risk_logits", "category_logits"), ("query_", "query_risk_logits", "query_category_logits")):
        x = rms(h @ t[pre + "risk_level_category_pre.weight"].T, t[pre + "risk_level_category_layernorm.weight"], eps)
        out[rk] = x @ t[pre + "risk_level_head.weight"].T
        out[ck] = x @ t[pre + "category_head.weight"].T
    return out


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder: config.json + safetensors")
    ap.add_argument("--golden", required=True, help="golden .json.gz written by qwen3guard_ref.py")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0 ...")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--atol", type=float, default=1e-3, help="fail (exit 1) when any max abs error exceeds this")
    args = ap.parse_args()

    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}, dtype {args.dtype}")
    dtype = getattr(torch, args.dtype)
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    opener = gzip.open if args.golden.endswith(".gz") else open
    with opener(args.golden, "rt") as f:
        golden = json.load(f)

    tensors = load_tensors(args.model)
    model, _ = build_model(cfg, dtype, args.device)
    sd = backbone_state_dict(tensors)
    sd = {k: v.to(dtype) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.to(device=args.device, dtype=dtype)
    check_rope(model, cfg)
    head_tensors = {k: v for k, v in tensors.items() if not k.startswith("model.") and not k.startswith("lm_head.")}
    eps = float(cfg["rms_norm_eps"])

    worst = {k: (0.0, 0.0) for k in KEYS}
    argmax_bad = 0
    argmax_all = 0
    for case in golden["cases"]:
        ids = torch.tensor([case["ids"]], dtype=torch.long, device=args.device)
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=False)
            h = out.last_hidden_state[0]
            got = {"hidden": h}
            got.update(heads(h, head_tensors, eps))
        line = [f"{case['name']} (T={len(case['ids'])}):"]
        for k in KEYS:
            g = torch.tensor(case[k], dtype=torch.float64)
            a = got[k].detach().to("cpu", torch.float64)
            if a.shape != g.shape:
                sys.exit(f"{case['name']}: {k} shape {list(a.shape)}, golden {list(g.shape)}")
            ab = (a - g).abs().max().item()
            rel = ab / max(g.abs().max().item(), 1e-30)
            worst[k] = (max(worst[k][0], ab), max(worst[k][1], rel))
            line.append(f"{k} abs {ab:.3e} rel {rel:.3e}")
            if k.endswith("risk_logits"):
                argmax_all += g.shape[0]
                argmax_bad += int((a.argmax(-1) != g.argmax(-1)).sum().item())
        print("  ".join(line))
    print("worst over all cases:")
    for k in KEYS:
        print(f"  {k:24s} max abs {worst[k][0]:.3e}  max rel {worst[k][1]:.3e}")
    print(f"risk argmax disagreements: {argmax_bad} of {argmax_all}")
    bad = [k for k in KEYS if worst[k][0] > args.atol]
    if bad:
        print(f"FAIL: {bad} exceed atol {args.atol}")
        return 1
    print(f"PASS (atol {args.atol})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
