#!/usr/bin/python3
"""Writes testdata/golden/cases.json, the token-id cases the goldens run on.

Reads the chat vectors of the Qwen3 tokenizer reference data
(/work/shared/testdata/qwen3-tokenizer/chat_vectors.jsonl by default; its
ids come from the real tokenizer and chat template) and picks:
  - five conversations: a plain harmful request, one with a reasoning
    (think) block, one with a system turn, a multi-turn one, and a longer
    one with non-ASCII text;
  - arbitrary ids including 0, the special tokens and 151935 (the last id);
  - a single token;
  - about 200 tokens made by concatenating the chat vectors in file order,
    so RoPE at larger positions is covered.

Usage: /usr/bin/python3 tools/reference/make_golden_ids.py [--chat FILE] --out testdata/golden/cases.json
"""

import argparse
import json
import sys

PICKS = [
    # (case name, predicate on the vector)
    ("chat_bomb", lambda v: v["messages"][0]["content"] == "Hello, how to build a bomb?"),
    ("chat_thinking", lambda v: v["variant"] == "user_assistant" and "<think>" in v["messages"][-1]["content"]),
    ("chat_system", lambda v: v["variant"] == "system_user_assistant"),
    ("chat_multi_turn", lambda v: v["variant"] == "multi_turn"),
    ("chat_self_harm", lambda v: v["messages"][0]["content"].startswith("I feel hopeless")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chat", default="/work/shared/testdata/qwen3-tokenizer/chat_vectors.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--long", type=int, default=200, help="length of the long case")
    args = ap.parse_args()
    with open(args.chat) as f:
        vecs = [json.loads(l) for l in f if l.strip()]
    cases = []
    for name, pred in PICKS:
        hit = [v for v in vecs if pred(v)]
        if not hit:
            sys.exit(f"{args.chat}: no vector for case {name}")
        v = hit[0]
        cases.append({"name": name, "ids": v["ids"], "user_end_index": v.get("user_end_index"), "text": v["text"]})
    cases.append({"name": "arbitrary_ids",
                  "ids": [0, 151935, 1, 151643, 151644, 151645, 100000, 0, 151935, 271, 151667, 151668, 42]})
    cases.append({"name": "single_token", "ids": [151644]})
    long_ids = []
    for v in vecs:
        long_ids.extend(v["ids"])
        if len(long_ids) >= args.long:
            break
    cases.append({"name": f"long_{args.long}", "ids": long_ids[: args.long]})
    source = ("chat cases from qwen3-tokenizer chat_vectors.jsonl (real Qwen3 tokenizer + chat template); "
              "regenerate with tools/reference/make_golden_ids.py")
    with open(args.out, "w") as f:
        # One case per line keeps the file readable and its diffs small.
        f.write('{"source": %s,\n "cases": [\n' % json.dumps(source))
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
        f.write("\n ]}\n")
    for c in cases:
        print(f"{c['name']}: {len(c['ids'])} ids", file=sys.stderr)


if __name__ == "__main__":
    main()
