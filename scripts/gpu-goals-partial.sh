#!/usr/bin/env bash
# Checks that scripts/gpu-goals.sh reads a run cut short or partly failed (scripts/test.sh runs it):
# the fixture's files packed as the run packs them (rest.tgz), one model's measurement an error, one
# CPU file cut off, the load test's file empty. Every other table must still be printed.
set -euo pipefail
cd "$(dirname "$0")/.."
fx=scripts/testdata/gpu-check-out
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/out" "$tmp/rest"
cp "$fx/report.json" "$fx/anchor-0.6b-bf16.json" "$tmp/out/"
cp "$fx"/bench-cuda-0.6b-bf16.json "$fx"/cpu-0.6b-awq-t*.json "$tmp/rest/"
: >"$tmp/rest/loadtest-cuda-0.6b-awq.json"
head -c 100 "$fx/cpu-0.6b-awq-t2.json" >"$tmp/rest/cpu-0.6b-awq-t2.json"
tar -C "$tmp/rest" -czf "$tmp/out/rest.tgz" .
jq '.models["qwen3guard-stream-8b-awq"] = {"error": "bench: out of memory"}' "$fx/report.json" >"$tmp/out/report.json"
got=$(bash scripts/gpu-goals.sh "$tmp/out" 2>&1)
fail=0
for want in '| 8B AWQ streamed token at 100 ≤ 3 ms | not measured | – |' \
	'| qwen3guard-stream-8b-awq | error: bench: out of memory |' \
	'| 0.6B BF16, same folder and GPU |' \
	'(loadtest-cuda-0.6b-awq.json is empty or cut off' \
	'(cpu-0.6b-awq-t2.json is empty or cut off' \
	'| 1 | 0.6b-awq |'; do
	if ! grep -qF -- "$want" <<<"$got"; then
		echo "gpu-goals.sh on a partial run: no line with: $want" >&2
		fail=1
	fi
done
if [ $fail = 1 ]; then
	echo "$got" >&2
	exit 1
fi
echo "gpu-goals.sh reads a partial run: ok"
