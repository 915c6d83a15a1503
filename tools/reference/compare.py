#!/usr/bin/python3
"""Compares two forward-output files (golden vs. engine) key by key.

Both files have the layout qwen3guard_ref.py and `streamguard forward` write:
{"cases": [{"name", "ids", "hidden", "risk_logits", "category_logits",
"query_risk_logits", "query_category_logits"}]}, optionally gzipped.

  /usr/bin/python3 tools/reference/compare.py GOLDEN.json.gz OTHER.json[.gz] [--atol 1e-4]

Prints, per key, the max absolute error, the max error relative to the
golden's largest magnitude for that case, and the number of positions whose
argmax differs; exits 1 if a max abs error exceeds --atol or the ids differ.
"""

import argparse
import gzip
import json
import sys

import numpy as np

KEYS = ["hidden", "risk_logits", "category_logits", "query_risk_logits", "query_category_logits"]


def load(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rt") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("golden")
    ap.add_argument("other")
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()
    g, o = load(args.golden), load(args.other)
    oc = {c["name"]: c for c in o["cases"]}
    fail = False
    worst = {k: [0.0, 0.0, 0, 0] for k in KEYS}
    for c in g["cases"]:
        d = oc.get(c["name"])
        if d is None:
            print(f"{c['name']}: missing from {args.other}")
            fail = True
            continue
        if list(c["ids"]) != list(d["ids"]):
            print(f"{c['name']}: ids differ")
            fail = True
            continue
        for k in KEYS:
            a, b = np.array(c[k], dtype=np.float64), np.array(d[k], dtype=np.float64)
            if a.shape != b.shape:
                print(f"{c['name']}: {k} shape {b.shape}, golden {a.shape}")
                fail = True
                continue
            ab = float(np.max(np.abs(a - b))) if a.size else 0.0
            rel = ab / max(float(np.max(np.abs(a))), 1e-30) if a.size else 0.0
            w = worst[k]
            w[0], w[1] = max(w[0], ab), max(w[1], rel)
            if k != "hidden":
                w[2] += int(np.sum(a.argmax(-1) != b.argmax(-1)))
                w[3] += a.shape[0]
    for k in KEYS:
        w = worst[k]
        am = f"  argmax differs at {w[2]}/{w[3]}" if k != "hidden" else ""
        flag = "  > atol" if w[0] > args.atol else ""
        print(f"{k:24s} max abs {w[0]:.3e}  max rel {w[1]:.3e}{am}{flag}")
        fail = fail or w[0] > args.atol
    print("FAIL" if fail else f"PASS (atol {args.atol})")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
