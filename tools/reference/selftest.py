#!/usr/bin/python3
"""Self-checks of the NumPy reference on small random models it writes itself.

Runs without the Go engine:  /usr/bin/python3 tools/reference/selftest.py
Prints one line per check and a final 'N passed, N failed' line; exits 1 on failure.
"""

import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import awq_pack_vectors as awqv  # noqa: E402
import qwen3guard_ref as ref  # noqa: E402

# ---------------------------------------------------------------------------
# writing safetensors
# ---------------------------------------------------------------------------


def encode(dt, a):
    if dt == "F32":
        return np.asarray(a, dtype="<f4").tobytes()
    if dt == "F16":
        return np.asarray(a, dtype="<f2").tobytes()
    if dt == "BF16":
        u = np.asarray(a, dtype=np.float32).view(np.uint32)
        # round to nearest even into the high half
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return u.astype("<u2").tobytes()
    if dt == "I32":
        return np.asarray(a).astype(np.uint32).view("<i4").tobytes()
    raise ValueError(dt)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype, array)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, a = tensors[name]
        b = encode(dt, a)
        header[name] = {"dtype": dt, "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------
# random models
# ---------------------------------------------------------------------------

SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, guard_inner_size=16)

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def random_weights(seed, c=SMALL):
    rng = np.random.default_rng(seed)
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    nh, nkv, hd, G = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["guard_inner_size"]
    w = {}

    def mat(n, k):
        return rng.normal(0, 1 / np.sqrt(k), (n, k)).astype(np.float32)

    def norm(n):
        return (1 + 0.2 * rng.normal(size=n)).astype(np.float32)

    w["model.embed_tokens.weight"] = rng.normal(0, 1, (c["vocab_size"], H)).astype(np.float32)
    shapes = {"self_attn.q_proj": (nh * hd, H), "self_attn.k_proj": (nkv * hd, H), "self_attn.v_proj": (nkv * hd, H),
              "self_attn.o_proj": (H, nh * hd), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_norm.weight"] = norm(hd)
        w[p + "self_attn.k_norm.weight"] = norm(hd)
        for name in LINEARS:
            w[p + name + ".weight"] = mat(*shapes[name])
    w["model.norm.weight"] = norm(H)
    for pre, nc in (("", 8), ("query_", 9)):
        w[pre + "risk_level_category_pre.weight"] = mat(G, H)
        w[pre + "risk_level_category_layernorm.weight"] = norm(G)
        w[pre + "risk_level_head.weight"] = mat(3, G)
        w[pre + "category_head.weight"] = mat(nc, G)
    return w


def write_model(d, weights, dtype="F32", extra_cfg=None, awq_group=None, shards=1):
    os.makedirs(d, exist_ok=True)
    cfg = dict(SMALL, architectures=["Qwen3ForGuardModel"], model_type="qwen3", rms_norm_eps=1e-6,
               rope_theta=1e6, max_position_embeddings=8192, tie_word_embeddings=True)
    cfg.update(extra_cfg or {})
    tensors = {}
    for name, a in weights.items():
        is_lin = name.startswith("model.layers.") and any(name.endswith(l + ".weight") for l in LINEARS)
        if awq_group and is_lin:
            q, z, s = awqv.quantize(a, awq_group)
            p = name[: -len(".weight")]
            tensors[p + ".qweight"] = ("I32", awqv.pack(q))
            tensors[p + ".qzeros"] = ("I32", awqv.pack(z))
            tensors[p + ".scales"] = ("F16", s)
        else:
            tensors[name] = (dtype, a)
    if awq_group:
        cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": awq_group,
                                      "zero_point": True, "version": "gemm"}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
        return
    names = sorted(tensors)
    wm = {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        write_safetensors(os.path.join(d, fn), part)
        for n in part:
            wm[n] = fn
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)


# ---------------------------------------------------------------------------
# a second, deliberately naive implementation: token by token with a KV cache
# ---------------------------------------------------------------------------


def naive_forward(model_dir, ids):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    ck = ref.Checkpoint(model_dir)
    W = {n: ck.get(n) for n in ck.where}
    H, L = c["hidden_size"], c["num_hidden_layers"]
    nh, nkv, hd, eps, theta = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"], c["rope_theta"]

    def norm(x, w):
        return np.array([x[i] * w[i] for i in range(len(x))]) / np.sqrt(sum(v * v for v in x) / len(x) + eps)

    def rope(x, pos):
        out = np.empty(hd)
        for i in range(hd // 2):
            a = pos * theta ** (-2.0 * i / hd)
            out[i] = x[i] * np.cos(a) - x[i + hd // 2] * np.sin(a)
            out[i + hd // 2] = x[i + hd // 2] * np.cos(a) + x[i] * np.sin(a)
        return out

    kc = [[] for _ in range(L)]
    vc = [[] for _ in range(L)]
    outs = []
    for pos, t in enumerate(ids):
        h = W["model.embed_tokens.weight"][t].copy()
        for l in range(L):
            p = f"model.layers.{l}."
            x = norm(h, W[p + "input_layernorm.weight"])
            q = W[p + "self_attn.q_proj.weight"] @ x
            k = W[p + "self_attn.k_proj.weight"] @ x
            v = W[p + "self_attn.v_proj.weight"] @ x
            qs = [rope(norm(q[j * hd:(j + 1) * hd], W[p + "self_attn.q_norm.weight"]), pos) for j in range(nh)]
            ks = [rope(norm(k[j * hd:(j + 1) * hd], W[p + "self_attn.k_norm.weight"]), pos) for j in range(nkv)]
            vs = [v[j * hd:(j + 1) * hd] for j in range(nkv)]
            kc[l].append(ks)
            vc[l].append(vs)
            att = []
            for j in range(nh):
                g = j * nkv // nh
                sc = np.array([qs[j] @ kc[l][s][g] / np.sqrt(hd) for s in range(pos + 1)])
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att.append(sum(pr[s] * vc[l][s][g] for s in range(pos + 1)))
            h = h + W[p + "self_attn.o_proj.weight"] @ np.concatenate(att)
            x = norm(h, W[p + "post_attention_layernorm.weight"])
            gt = W[p + "mlp.gate_proj.weight"] @ x
            up = W[p + "mlp.up_proj.weight"] @ x
            h = h + W[p + "mlp.down_proj.weight"] @ (gt / (1 + np.exp(-gt)) * up)
        h = norm(h, W["model.norm.weight"])
        r = {"hidden": h}
        for pre, key in (("", ""), ("query_", "query_")):
            xr = norm(W[pre + "risk_level_category_pre.weight"] @ h, W[pre + "risk_level_category_layernorm.weight"])
            r[key + "risk_logits"] = W[pre + "risk_level_head.weight"] @ xr
            r[key + "category_logits"] = W[pre + "category_head.weight"] @ xr
        outs.append(r)
    return {k: np.array([o[k] for o in outs]) for k in outs[0]}


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------

KEYS = ["hidden", "risk_logits", "category_logits", "query_risk_logits", "query_category_logits"]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")


def maxdiff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in KEYS)


def main():
    tmp = tempfile.mkdtemp(prefix="sg-ref-selftest-")
    w = random_weights(7)
    ids = [0, 5, 17, 299, 3, 3, 42, 100, 7, 1, 250, 123, 64]

    # RoPE: identity at position 0; scores depend only on relative position.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 2, 16))
    cos, sin = ref.rope_tables([0], 16, 1e6)
    check("rope position 0 is identity", np.array_equal(ref.apply_rope(x, cos, sin), x))
    qv, kv = rng.normal(size=(1, 1, 16)), rng.normal(size=(1, 1, 16))

    def score(m, n):
        cm, sm = ref.rope_tables([m], 16, 1e6)
        cn, sn = ref.rope_tables([n], 16, 1e6)
        return float(ref.apply_rope(qv, cm, sm).ravel() @ ref.apply_rope(kv, cn, sn).ravel())

    d = abs(score(7, 3) - score(1007, 1003))
    check("rope scores are shift invariant", d < 1e-12, f"(|diff| {d:.2e})")
    cos, sin = ref.rope_tables([3], 16, 1e6)
    d = abs(np.linalg.norm(ref.apply_rope(x, cos, sin)) - np.linalg.norm(x))
    check("rope preserves norm", d < 1e-12, f"(|diff| {d:.2e})")

    # bf16 decoding of known bit patterns.
    bits = np.array([0x3F80, 0xC000, 0x0000, 0x8000, 0x7F80, 0x3E80, 0x0001], dtype="<u2")
    got = ref.decode("BF16", (7,), bits.tobytes())
    want = np.array([1.0, -2.0, 0.0, -0.0, np.inf, 0.25, 2.0 ** -133])
    check("bf16 decode", np.array_equal(got, want), str(got))

    d32 = os.path.join(tmp, "f32")
    write_model(d32, w)
    m = ref.Qwen3Guard(d32)
    full = m.forward(ids)
    shapes = {k: full[k].shape for k in KEYS}
    check("output shapes", shapes == {"hidden": (13, 32), "risk_logits": (13, 3), "category_logits": (13, 8),
                                       "query_risk_logits": (13, 3), "query_category_logits": (13, 9)}, str(shapes))

    # Causality: the first t positions do not change when tokens are appended.
    worst = 0.0
    for t in (1, 2, 5, 12):
        pre = m.forward(ids[:t])
        worst = max(worst, max(float(np.max(np.abs(pre[k] - full[k][:t]))) for k in KEYS))
    check("causal prefix invariance", worst < 1e-12, f"(max {worst:.2e})")
    other = m.forward(ids[:6] + [9, 9, 9])
    d0 = max(float(np.max(np.abs(other[k][:6] - full[k][:6]))) for k in KEYS)
    d1 = float(np.max(np.abs(other["hidden"][6:] - full["hidden"][6:9])))
    check("later tokens change only later positions", d0 < 1e-12 and d1 > 1e-3, f"(prefix {d0:.2e}, suffix {d1:.2e})")

    # An independent, token-by-token KV-cache implementation agrees.
    nv = naive_forward(d32, ids)
    d = maxdiff(nv, full)
    check("naive KV-cache forward matches", d < 1e-10, f"(max {d:.2e})")

    # Final hidden is RMS-normalised: mean square of h/weight is 1.
    wn = w["model.norm.weight"].astype(np.float64)
    ms = np.mean((full["hidden"] / wn) ** 2, axis=1)
    check("final norm applied", np.max(np.abs(ms - 1)) < 1e-5, f"(max |ms-1| {np.max(np.abs(ms - 1)):.2e})")

    # Sharded checkpoint == single file.
    dsh = os.path.join(tmp, "sharded")
    write_model(dsh, w, shards=3)
    d = maxdiff(ref.Qwen3Guard(dsh).forward(ids), full)
    check("sharded == single file", d == 0.0, f"(max {d:.2e})")

    # BF16 / F16 checkpoints equal F32 checkpoints holding the same rounded values.
    for dt, cast in (("BF16", None), ("F16", np.float16)):
        dd = os.path.join(tmp, dt)
        write_model(dd, w, dtype=dt)
        mb = ref.Qwen3Guard(dd)
        if cast is None:
            rw = {}
            for n, a in w.items():
                rw[n] = ref.decode("BF16", a.shape, encode("BF16", a)).astype(np.float32)
        else:
            rw = {n: a.astype(cast).astype(np.float32) for n, a in w.items()}
        de = os.path.join(tmp, dt + "-as-f32")
        write_model(de, rw)
        d = maxdiff(mb.forward(ids), ref.Qwen3Guard(de).forward(ids))
        dfull = maxdiff(mb.forward(ids), full)
        check(f"{dt} checkpoint == F32 of rounded weights", d == 0.0, f"(max {d:.2e}; vs unrounded {dfull:.2e})")

    # AWQ: the reference's dequantization equals an F32 model with the
    # dequantized weights written out by the independent pack-vector code.
    da = os.path.join(tmp, "awq")
    write_model(da, w, awq_group=16)
    ma = ref.Qwen3Guard(da)
    dq = dict(w)
    for n, a in w.items():
        if n.startswith("model.layers.") and any(n.endswith(l + ".weight") for l in LINEARS):
            q, z, s = awqv.quantize(a, 16)
            dq[n] = awqv.dequantize(q, z, s, 16)
    de = os.path.join(tmp, "awq-as-f32")
    write_model(de, dq)
    ra = ma.forward(ids)
    d = maxdiff(ra, ref.Qwen3Guard(de).forward(ids))
    dfull = maxdiff(ra, full)
    check("AWQ dequantized forward == F32 of dequantized weights", d == 0.0, f"(max {d:.2e}; quantization error vs F32 {dfull:.2e})")
    pre = ma.forward(ids[:4])
    d = max(float(np.max(np.abs(pre[k] - ra[k][:4]))) for k in KEYS)
    check("AWQ causal prefix invariance", d < 1e-12, f"(max {d:.2e})")

    # AWQ without qzeros uses z = 8.
    wq = awqv.pack(np.full((32, 64), 9))
    W = ref.awq_dequantize(wq.view(np.int32), None, np.full((2, 64), 0.5), 16)
    check("AWQ missing qzeros -> z=8", W.shape == (64, 32) and np.all(W == 0.5))

    # AWQ unpack in the reference agrees with the committed pack vectors.
    here = os.path.dirname(os.path.abspath(__file__))
    vec = os.path.join(here, "..", "..", "testdata", "golden", "awq_pack.json")
    if os.path.exists(vec):
        with open(vec) as f:
            vs = json.load(f)["cases"]
        ok = True
        for c in vs:
            Wd = ref.awq_dequantize(np.array(c["qweight_i32"], dtype=np.int64), np.array(c["qzeros_i32"], dtype=np.int64),
                                    np.array(c["scales"]), c["group_size"])
            ok = ok and np.array_equal(Wd, np.array(c["w_dequant"]))
        check("reference dequant == awq_pack.json w_dequant", ok, f"({len(vs)} cases)")

    # Bad input gives clear errors.
    try:
        m.forward([0, 300])
        check("out-of-range id rejected", False)
    except ValueError as e:
        check("out-of-range id rejected", "300" in str(e), f"({e})")
    bad = os.path.join(tmp, "bad")
    os.makedirs(bad)
    with open(os.path.join(bad, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 1 << 40))
    try:
        ref.Checkpoint(bad)
        check("truncated safetensors rejected", False)
    except ValueError as e:
        check("truncated safetensors rejected", "header length" in str(e), f"({e})")

    shutil.rmtree(tmp, ignore_errors=True)
    n_ok = sum(results)
    n_bad = len(results) - n_ok
    print(f"{n_ok} passed, {n_bad} failed")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
