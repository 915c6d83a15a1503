#!/usr/bin/python3
"""Independent AWQ GEMM (w4, zero point) quantize/pack/unpack vectors.

Written from a description of AutoAWQ's GEMM layout and its w4 quantizer only
(not from the Go code). For a float weight
W [N, K] (nn.Linear orientation, out x in) and a group size G along K:

  per (output n, group g):  mx = max(w), mn = min(w)
      s = fp16( max(mx - mn, 1e-5) / 15 )            (float32 arithmetic, then round to fp16)
      z = clamp(-round(mn / s), 0, 15)
      q = clamp(round(w / s) + z, 0, 15)              (round = half to even)
  qweight [K, N/8] int32: bits 4i..4i+3 of word c hold q[k][8c + ORDER[i]], ORDER = [0,2,4,6,1,3,5,7]
  qzeros  [K/G, N/8] int32: same packing of z
  scales  [K/G, N] fp16
  dequantized W'[n][k] = (q[k][n] - z[k/G][n]) * s[k/G][n]   (exact in float32)

All arithmetic that decides q, z and s is float32 (numpy float32 ops are
IEEE-754 correctly rounded, as Go float32 ops are), so a Go implementation
that computes in float32 must match bit for bit. The unpacking here uses
the reverse order REV = [0,4,1,5,2,6,3,7] as a separate code path and is
checked against the packer.

Usage: /usr/bin/python3 tools/reference/awq_pack_vectors.py --out testdata/golden/awq_pack.json
"""

import argparse
import json
import sys

import numpy as np

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def quantize(w, group_size):
    """w [N, K] float32 -> q [K, N], z [K/G, N] (int), s [K/G, N] float16."""
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"K={k} is not a multiple of group size {group_size}")
    ng = k // group_size
    wg = w.reshape(n, ng, group_size)
    mx = wg.max(axis=2)
    mn = wg.min(axis=2)
    s32 = np.maximum(mx - mn, np.float32(1e-5)) / np.float32(15)
    s16 = s32.astype(np.float16)  # round to nearest even
    sf = s16.astype(np.float32)
    z = np.clip(-np.round(mn / sf), 0, 15).astype(np.int64)  # [N, ng]
    q = np.clip(np.round(wg / sf[:, :, None]) + z[:, :, None], 0, 15).astype(np.int64)
    q = q.reshape(n, k)
    return q.T.copy(), z.T.copy(), s16.T.copy()


def pack(vals):
    """[R, C] u4 values (C % 8 == 0) -> [R, C/8] uint32 words."""
    r, c = vals.shape
    if c % 8:
        raise ValueError(f"{c} columns is not a multiple of 8")
    out = np.zeros((r, c // 8), dtype=np.uint64)
    for i in range(8):
        out |= vals[:, AWQ_ORDER[i]::8].astype(np.uint64) << np.uint64(4 * i)
    return out.astype(np.uint32)


def unpack(words):
    """[R, C] uint32 words -> [R, 8C] u4 values (column 8c+j at nibble REV[j])."""
    u = np.asarray(words, dtype=np.uint64)
    r, c = u.shape
    out = np.empty((r, 8 * c), dtype=np.int64)
    for j in range(8):
        out[:, j::8] = ((u >> np.uint64(4 * AWQ_REVERSE_ORDER[j])) & np.uint64(0xF)).astype(np.int64)
    return out


def dequantize(q, z, s, group_size):
    """q [K, N], z [K/G, N], s [K/G, N] fp16 -> W' [N, K] float32 (exact)."""
    g = np.arange(q.shape[0]) // group_size
    w = (q - z[g]).astype(np.float32) * s[g].astype(np.float32)
    return w.T.copy()


def to_i32(words):
    return words.astype(np.uint32).view(np.int32)


def make_case(name, w, group_size, note):
    w = np.asarray(w, dtype=np.float32)
    n, k = w.shape
    q, z, s = quantize(w, group_size)
    qweight = pack(q)
    qzeros = pack(z)
    # Independent checks: the REV unpack inverts the ORDER pack, and the
    # dequantized values equal (q - z) * s computed in float64.
    assert np.array_equal(unpack(qweight), q) and np.array_equal(unpack(qzeros), z)
    wd = dequantize(q, z, s, group_size)
    g = np.arange(k) // group_size
    w64 = ((q - z[g]).astype(np.float64) * s[g].astype(np.float64)).T
    assert np.array_equal(wd.astype(np.float64), w64)
    return {
        "name": name,
        "note": note,
        "K": k,
        "N": n,
        "group_size": group_size,
        "w": [[float(v) for v in row] for row in w],  # [N][K], float32 values
        "q": q.tolist(),  # [K][N]
        "z": z.tolist(),  # [K/G][N]
        "scales_f16_bits": s.view(np.uint16).astype(int).tolist(),  # [K/G][N]
        "scales": [[float(v) for v in row] for row in s.astype(np.float64)],
        "qweight_u32": qweight.astype(np.int64).tolist(),  # [K][N/8]
        "qweight_i32": to_i32(qweight).astype(np.int64).tolist(),
        "qzeros_u32": qzeros.astype(np.int64).tolist(),  # [K/G][N/8]
        "qzeros_i32": to_i32(qzeros).astype(np.int64).tolist(),
        "w_dequant": [[float(v) for v in row] for row in wd],  # [N][K], float32 values
    }


def edge_weights():
    """N=8, K=16, G=8: one row per edge case, values exact in float32."""
    w = np.zeros((8, 16), dtype=np.float32)
    # Row 0, group 0: exact .5 ties. mn=-0.625, mx=3.125 -> s=0.25 exactly,
    # mn/s = -2.5 rounds to -2 (half even) so z=2; w/s of 0.5, 1.5, -1.5, 2.5 tie.
    w[0, 0:8] = [-0.625, 3.125, 0.125, 0.375, -0.375, 0.625, 0.0, 1.0]
    # Row 0, group 1: plain ramp.
    w[0, 8:16] = np.linspace(-1, 1, 8, dtype=np.float32)
    # Row 1: all positive (z clamps at 0, large q clamps at 15).
    w[1, 0:8] = [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5]
    w[1, 8:16] = [10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7]
    # Row 2: all negative (z clamps at 15, q clamps at 0).
    w[2, 0:8] = -np.array([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5], dtype=np.float32)
    w[2, 8:16] = -np.array([10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7], dtype=np.float32)
    # Row 3: constant groups (range 0 -> s = fp16(1e-5/15), a subnormal fp16).
    w[3, 0:8] = 0.0
    w[3, 8:16] = 3e-6
    # Row 4: one outlier per group.
    w[4, :] = 0.01
    w[4, 3] = 7.0
    w[4, 12] = -7.0
    # Rows 5..7: distinct nibble per column so the packing order is visible.
    for r in range(5, 8):
        for c in range(16):
            w[r, c] = float(((c * 3 + r) % 16) - 8) / 4.0
    w[5, 0] = -2.0
    w[5, 8] = -2.0
    return w


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    cases = [
        make_case("edge_n8_k16_g8", edge_weights(), 8,
                  "hand-made: exact .5 ties (half-to-even), z clamps at 0 and 15, constant groups (subnormal fp16 scale), outliers"),
        make_case("normal_n8_k32_g16", rng.normal(0, 0.05, (8, 32)), 16, "N(0, 0.05)"),
        make_case("normal_n16_k64_g32", rng.normal(0, 1.0, (16, 64)), 32, "N(0, 1)"),
        make_case("uniform_n24_k128_g128", rng.uniform(-0.2, 0.3, (24, 128)), 128,
                  "U(-0.2, 0.3), the real group size"),
    ]
    obj = {
        "format": "AWQ GEMM w4 zero-point; see tools/reference/awq_pack_vectors.py for field meanings",
        "generator": "/usr/bin/python3 tools/reference/awq_pack_vectors.py --out testdata/golden/awq_pack.json --seed %d" % args.seed,
        "numpy": np.__version__,
        "order": AWQ_ORDER,
        "reverse_order": AWQ_REVERSE_ORDER,
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    for c in cases:
        print(f"{c['name']}: K={c['K']} N={c['N']} G={c['group_size']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
