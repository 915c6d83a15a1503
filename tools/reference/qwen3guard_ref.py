#!/usr/bin/python3
"""Float64 NumPy reference forward pass for Qwen3Guard-Stream models.

Written from a description of the model only (the Qwen3 backbone, the guard
heads, the scaffold's token ids, the AutoAWQ GEMM layout), not from the Go
code. It reads a model folder (config.json plus one
safetensors file or a model.safetensors.index.json with shards), runs the
Qwen3 backbone and the eight guard-head tensors at every position, and writes
the results as gzipped JSON. It shares no code with the Go engine, so the two
can check each other.

Usage:
  /usr/bin/python3 tools/reference/qwen3guard_ref.py --model DIR \
      --ids-file IDS.json --out OUT.json.gz [--meta key=value ...]

IDS.json is {"cases": [{"name": "...", "ids": [int, ...]}, ...]}.
"""

import argparse
import gzip
import hashlib
import json
import os
import struct
import sys

import numpy as np

# ---------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------

_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}


class TensorFile:
    """One .safetensors file: the header parsed, the data memory-mapped."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError(f"{path}: shorter than the 8-byte header length")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > size - 8 or hlen > 100 << 20:
                raise ValueError(f"{path}: header length {hlen} does not fit a {size}-byte file")
            header = json.loads(f.read(hlen).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError(f"{path}: header is not a JSON object")
        self.base = 8 + hlen
        data_len = size - self.base
        self.entries = {}
        for name, e in header.items():
            if name == "__metadata__":
                continue
            dt, shape, (lo, hi) = e["dtype"], e["shape"], e["data_offsets"]
            if dt not in _DTYPES:
                raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
            n = 1
            for d in shape:
                if not isinstance(d, int) or d < 0:
                    raise ValueError(f"{path}: tensor {name}: bad shape {shape}")
                n *= d
            if not (0 <= lo <= hi <= data_len) or hi - lo != n * _DTYPES[dt]:
                raise ValueError(f"{path}: tensor {name}: offsets [{lo},{hi}) do not hold {shape} {dt}")
            self.entries[name] = (dt, tuple(shape), lo, hi)
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")

    def raw(self, name):
        dt, shape, lo, hi = self.entries[name]
        return dt, shape, self.mm[self.base + lo:self.base + hi]


def decode(dt, shape, buf):
    """Raw little-endian bytes -> numpy array (floats as float64, I32 kept integral)."""
    if dt == "F64":
        a = np.frombuffer(buf, dtype="<f8")
    elif dt == "F32":
        a = np.frombuffer(buf, dtype="<f4").astype(np.float64)
    elif dt == "F16":
        a = np.frombuffer(buf, dtype="<f2").astype(np.float64)
    elif dt == "BF16":
        # bf16 is the high half of an IEEE float32.
        u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
        a = u.view(np.float32).astype(np.float64)
    elif dt == "I32":
        a = np.frombuffer(buf, dtype="<i4").copy()
    elif dt == "I64":
        a = np.frombuffer(buf, dtype="<i8").copy()
    else:
        raise ValueError(f"unsupported dtype {dt}")
    return a.reshape(shape)


class Checkpoint:
    """All tensors of a model folder, single file or sharded."""

    def __init__(self, model_dir):
        self.dir = model_dir
        self.files = []
        self.where = {}
        index = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                wm = json.load(f)["weight_map"]
            shards = {}
            for name, shard in sorted(wm.items()):
                if os.path.basename(shard) != shard:
                    raise ValueError(f"{index}: shard name {shard!r} is not a plain file name")
                if shard not in shards:
                    shards[shard] = TensorFile(os.path.join(model_dir, shard))
                    self.files.append(shards[shard])
                tf = shards[shard]
                if name not in tf.entries:
                    raise ValueError(f"{index}: {name} is mapped to {shard}, which does not hold it")
                self.where[name] = tf
            for tf in self.files:
                for name in tf.entries:
                    if name not in wm:
                        raise ValueError(f"{tf.path}: tensor {name} is missing from {index}")
        elif os.path.exists(single):
            tf = TensorFile(single)
            self.files.append(tf)
            for name in tf.entries:
                self.where[name] = tf
        else:
            raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")

    def has(self, name):
        return name in self.where

    def dtype(self, name):
        return self.where[name].entries[name][0]

    def shape(self, name):
        return self.where[name].entries[name][1]

    def get(self, name, shape=None):
        if name not in self.where:
            raise KeyError(f"{self.dir}: tensor {name} not found")
        a = decode(*self.where[name].raw(name))
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{self.dir}: tensor {name} has shape {list(a.shape)}, want {list(shape)}")
        return a

    def rows(self, name, idx):
        """Rows idx of a 2-D float tensor, without decoding the whole table."""
        dt, shape, buf = self.where[name].raw(name)
        if len(shape) != 2:
            raise ValueError(f"{self.dir}: tensor {name} is not 2-D")
        width = shape[1] * _DTYPES[dt]
        out = np.empty((len(idx), shape[1]), dtype=np.float64)
        for i, r in enumerate(idx):
            if not 0 <= r < shape[0]:
                raise ValueError(f"token id {r} out of range [0, {shape[0]}) of {name}")
            out[i] = decode(dt, (shape[1],), buf[r * width:(r + 1) * width])
        return out

    def sha256(self):
        out = {}
        for tf in self.files:
            h = hashlib.sha256()
            with open(tf.path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[os.path.basename(tf.path)] = h.hexdigest()
        return out


# ---------------------------------------------------------------------------
# AWQ GEMM (AutoAWQ's layout: int32 words of 8 nibbles, order 0 2 4 6 1 3 5 7)
# ---------------------------------------------------------------------------

AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def awq_unpack(words):
    """[R, C] int32 words -> [R, 8C] u4 values; column 8c+j is nibble REV[j] of word c."""
    u = words.astype(np.int64) & 0xFFFFFFFF
    r, c = u.shape
    out = np.empty((r, c * 8), dtype=np.int64)
    for j in range(8):
        out[:, j::8] = (u >> (4 * AWQ_REVERSE_ORDER[j])) & 0xF
    return out


def awq_dequantize(qweight, qzeros, scales, group_size):
    """qweight [K, N/8], qzeros [K/G, N/8] or None, scales [K/G, N] -> W [N, K] float64."""
    q = awq_unpack(qweight)  # [K, N]
    k, n = q.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"AWQ: K={k} is not a multiple of group_size {group_size}")
    ng = k // group_size
    if scales.shape != (ng, n):
        raise ValueError(f"AWQ: scales shape {list(scales.shape)}, want {[ng, n]}")
    if qzeros is None:
        z = np.full((ng, n), 8, dtype=np.int64)
    else:
        z = awq_unpack(qzeros)
        if z.shape != (ng, n):
            raise ValueError(f"AWQ: qzeros unpack to {list(z.shape)}, want {[ng, n]}")
    g = np.arange(k) // group_size
    w = (q - z[g]).astype(np.float64) * scales[g]  # [K, N]
    return w.T.copy()


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def rope_tables(positions, head_dim, theta):
    half = head_dim // 2
    inv_freq = theta ** (-(2.0 * np.arange(half, dtype=np.float64)) / head_dim)
    ang = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)  # [T, half]
    return np.cos(ang), np.sin(ang)


def apply_rope(x, cos, sin):
    """NeoX layout: dimension i pairs with i + head_dim/2. x is [T, H, D]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def _quant_group_size(cfg, model_dir):
    q = cfg.get("quantization_config")
    if q is None:
        p = os.path.join(model_dir, "quant_config.json")
        if os.path.exists(p):
            with open(p) as f:
                q = json.load(f)
    if not q:
        return None
    return int(q.get("group_size") or q.get("q_group_size") or 0) or None


class Qwen3Guard:
    def __init__(self, model_dir, compute_dtype=np.float64):
        # float64 is the reference. float32 exists only to estimate how far a
        # correct float32 engine lands from it (tolerance sizing), never for goldens.
        self.dt = np.dtype(compute_dtype)
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        c = self.cfg
        self.hidden = int(c["hidden_size"])
        self.layers = int(c["num_hidden_layers"])
        self.nh = int(c["num_attention_heads"])
        self.nkv = int(c["num_key_value_heads"])
        self.hd = int(c.get("head_dim") or self.hidden // self.nh)
        self.inter = int(c["intermediate_size"])
        self.eps = float(c["rms_norm_eps"])
        self.theta = float(c["rope_theta"])
        self.vocab = int(c["vocab_size"])
        if self.nh % self.nkv:
            raise ValueError("num_attention_heads is not a multiple of num_key_value_heads")
        if c.get("rope_scaling"):
            raise ValueError("rope_scaling is not part of the reference")
        self.ckpt = Checkpoint(model_dir)
        self.group_size = _quant_group_size(c, model_dir)
        self._cache = {}

    # weights ---------------------------------------------------------------

    def vec(self, name, n):
        if name not in self._cache:
            self._cache[name] = self.ckpt.get(name, (n,)).astype(self.dt)
        return self._cache[name]

    def linear_weight(self, prefix, n_out, n_in):
        """[n_out, n_in] float64 for a plain (.weight) or AWQ (.qweight) Linear."""
        key = prefix + "#W"
        if key in self._cache:
            return self._cache[key]
        ck = self.ckpt
        if ck.has(prefix + ".weight"):
            w = ck.get(prefix + ".weight", (n_out, n_in))
        elif ck.has(prefix + ".qweight"):
            qw = ck.get(prefix + ".qweight", (n_in, n_out // 8))
            sc = ck.get(prefix + ".scales")
            if sc.ndim != 2 or sc.shape[1] != n_out or sc.shape[0] == 0 or n_in % sc.shape[0]:
                raise ValueError(f"{prefix}.scales: shape {list(sc.shape)} does not fit [{n_in}/G, {n_out}]")
            g = n_in // sc.shape[0]
            if self.group_size is not None and g != self.group_size:
                raise ValueError(f"{prefix}: tensors imply group size {g}, config says {self.group_size}")
            qz = ck.get(prefix + ".qzeros", (n_in // g, n_out // 8)) if ck.has(prefix + ".qzeros") else None
            w = awq_dequantize(qw, qz, sc, g)
        else:
            raise KeyError(f"{ck.dir}: neither {prefix}.weight nor {prefix}.qweight found")
        if ck.has(prefix + ".bias"):
            raise ValueError(f"{prefix}.bias present; Qwen3 Linears have no bias")
        w = w.astype(self.dt)
        self._cache[key] = w
        return w

    def lin(self, x, prefix, n_out, n_in):
        return x @ self.linear_weight(prefix, n_out, n_in).T

    # forward ---------------------------------------------------------------

    def backbone(self, ids):
        T = len(ids)
        H, nh, nkv, hd = self.hidden, self.nh, self.nkv, self.hd
        for t in ids:
            if not (isinstance(t, int) and 0 <= t < self.vocab):
                raise ValueError(f"token id {t!r} out of range [0, {self.vocab})")
        h = self.ckpt.rows("model.embed_tokens.weight", ids).astype(self.dt)
        if h.shape[1] != H:
            raise ValueError(f"model.embed_tokens.weight width {h.shape[1]}, want hidden_size {H}")
        cos, sin = rope_tables(range(T), hd, self.theta)
        cos, sin = cos.astype(self.dt), sin.astype(self.dt)
        causal = np.triu(np.ones((T, T), dtype=bool), k=1)
        rep = nh // nkv
        scale = 1.0 / np.sqrt(hd)
        for i in range(self.layers):
            p = f"model.layers.{i}."
            x = rms_norm(h, self.vec(p + "input_layernorm.weight", H), self.eps)
            q = self.lin(x, p + "self_attn.q_proj", nh * hd, H).reshape(T, nh, hd)
            k = self.lin(x, p + "self_attn.k_proj", nkv * hd, H).reshape(T, nkv, hd)
            v = self.lin(x, p + "self_attn.v_proj", nkv * hd, H).reshape(T, nkv, hd)
            q = rms_norm(q, self.vec(p + "self_attn.q_norm.weight", hd), self.eps)
            k = rms_norm(k, self.vec(p + "self_attn.k_norm.weight", hd), self.eps)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            att = np.empty((T, nh, hd), dtype=self.dt)
            for head in range(nh):
                kvh = head // rep
                s = (q[:, head, :] @ k[:, kvh, :].T) * self.dt.type(scale)  # [T, T]
                s[causal] = -np.inf
                att[:, head, :] = softmax(s, axis=-1) @ v[:, kvh, :]
            h = h + self.lin(att.reshape(T, nh * hd), p + "self_attn.o_proj", H, nh * hd)
            x = rms_norm(h, self.vec(p + "post_attention_layernorm.weight", H), self.eps)
            g = self.lin(x, p + "mlp.gate_proj", self.inter, H)
            u = self.lin(x, p + "mlp.up_proj", self.inter, H)
            h = h + self.lin(silu(g) * u, p + "mlp.down_proj", H, self.inter)
        return rms_norm(h, self.vec("model.norm.weight", H), self.eps)

    def heads(self, hid):
        """The two head pairs of spec section 2, at every position."""
        ck = self.ckpt
        out = {}
        for path, pre in (("response", ""), ("query", "query_")):
            wpre = ck.get(pre + "risk_level_category_pre.weight").astype(self.dt)
            if wpre.ndim != 2 or wpre.shape[1] != self.hidden:
                raise ValueError(f"{pre}risk_level_category_pre.weight: shape {list(wpre.shape)}")
            G = wpre.shape[0]
            if self.cfg.get("guard_inner_size") not in (None, G):
                raise ValueError(f"guard_inner_size {self.cfg['guard_inner_size']} but {pre}risk_level_category_pre.weight has {G} rows")
            wn = ck.get(pre + "risk_level_category_layernorm.weight", (G,)).astype(self.dt)
            x = rms_norm(hid @ wpre.T, wn, self.eps)
            wr = ck.get(pre + "risk_level_head.weight").astype(self.dt)
            wc = ck.get(pre + "category_head.weight").astype(self.dt)
            if wr.ndim != 2 or wr.shape[1] != G or wc.ndim != 2 or wc.shape[1] != G:
                raise ValueError(f"{pre} head shapes {list(wr.shape)}, {list(wc.shape)} do not take {G} inputs")
            out[path] = (x @ wr.T, x @ wc.T)
        return out

    def forward(self, ids):
        hid = self.backbone(ids)
        hs = self.heads(hid)
        return {
            "hidden": hid,
            "risk_logits": hs["response"][0],
            "category_logits": hs["response"][1],
            "query_risk_logits": hs["query"][0],
            "query_category_logits": hs["query"][1],
        }

    def weight_dtypes(self):
        seen = {}
        for name, tf in self.ckpt.where.items():
            dt = tf.entries[name][0]
            seen[dt] = seen.get(dt, 0) + 1
        return dict(sorted(seen.items()))


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _rows(a):
    return [[float(v) for v in row] for row in a]


def write_json_gz(path, obj):
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    # mtime=0 and no file name: the same input gives byte-identical output.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(data)
            gz.write(b"\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder (config.json + safetensors)")
    ap.add_argument("--ids-file", required=True, help='JSON {"cases": [{"name", "ids"}]}')
    ap.add_argument("--out", required=True, help="output .json.gz (or .json)")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                    help="provenance fields for the output's model object (preset, dtype, seed, generator ...)")
    ap.add_argument("--compute-dtype", default="float64", choices=["float64", "float32"],
                    help="float32 only estimates a float32 engine's distance from the float64 reference")
    args = ap.parse_args(argv)

    with open(args.ids_file) as f:
        cases = json.load(f)["cases"]
    m = Qwen3Guard(args.model, compute_dtype=args.compute_dtype)
    model = {}
    for kv in args.meta:
        if "=" not in kv:
            ap.error(f"--meta {kv!r}: want KEY=VALUE")
        k, v = kv.split("=", 1)
        model[k] = v
    model.update({
        "config": {k: m.cfg.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim",
                                              "vocab_size", "rms_norm_eps", "rope_theta", "guard_inner_size",
                                              "quantization_config") if k in m.cfg},
        "tensor_dtypes": m.weight_dtypes(),
        "safetensors_sha256": m.ckpt.sha256(),
        "reference": "tools/reference/qwen3guard_ref.py (NumPy %s, %s)" % (np.__version__, args.compute_dtype),
    })
    # A --meta reference_command wins, so goldens made in a temporary folder
    # can record a stable command instead of a random path.
    model.setdefault("reference_command", "/usr/bin/python3 tools/reference/qwen3guard_ref.py " + " ".join(
        _shell_quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    out_cases = []
    for c in cases:
        ids = [int(t) for t in c["ids"]]
        r = m.forward(ids)
        oc = {"name": c["name"], "ids": ids}
        for k in ("hidden", "risk_logits", "category_logits", "query_risk_logits", "query_category_logits"):
            oc[k] = _rows(r[k])
        out_cases.append(oc)
        print(f"{c['name']}: {len(ids)} tokens", file=sys.stderr)
    obj = {"model": model, "cases": out_cases}
    if args.out.endswith(".gz"):
        write_json_gz(args.out, obj)
    else:
        with open(args.out, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.write("\n")
    return 0


def _shell_quote(s):
    if s and all(ch.isalnum() or ch in "-_./=:,+" for ch in s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    sys.exit(main())
