#!/usr/bin/env bash
# Reads what `scripts/gpu-check.sh run OUTDIR` wrote and prints, as Markdown, each GPU goal of
# docs/GPU.md beside the figure measured, the same run's ratios (graphs against direct launches,
# tensor cores against the one-warp kernels, recompute against a cached step) and the CPU engine's
# scaling over the GPU host's cores. Needs bash and jq; runs where the files came back.
#
#   scripts/gpu-goals.sh OUTDIR
#
# A run cut short, or a step that failed, leaves files missing, empty or cut off: each table says
# what it could not read and the others are printed all the same.
set -uo pipefail
out=${1:?usage: scripts/gpu-goals.sh OUTDIR}
[ -d "$out" ] || {
	echo "no folder $out" >&2
	exit 1
}
# Most files come packed in rest.tgz (the lent machine returns at most 8 files).
rest=$(mktemp -d)
trap 'rm -rf "$rest"' EXIT
[ -r "$out/rest.tgz" ] && { tar -xzf "$out/rest.tgz" -C "$rest" || echo "(rest.tgz unreadable: its tables are missing)"; }
# found NAME: the path of the run's file NAME, if it is there and holds JSON; else says why not.
found() {
	local f
	for f in "$out/$1" "$rest/$1"; do
		[ -e "$f" ] || continue
		if [ -s "$f" ] && jq empty "$f" 2>/dev/null; then
			echo "$f"
		else
			echo "($1 is empty or cut off: its step failed or was stopped)" >&2
		fi
		return
	done
}
report=$(found report.json)
if [ -z "$report" ]; then
	echo "(no readable report.json: the run did not reach the report, or it was stopped)"
else
	jq -r '
. as $r |
def model($m): $r.models[$m].bench // null;
def step($m; $p): (model($m).decode // [] | map(select(.position == $p)) | first | .ms_per_token) // null;
def agg($m; $s): (model($m).batched // [] | map(select(.streams == $s)) | first | .tokens_per_s) // null;
def fmt: if . == null then "not measured" elif type == "number" then (. * 1000 | round / 1000 | tostring) else tostring end;
def row($goal; $v; $ok): "| \($goal) | \($v | fmt) | \(if $v == null then "–" elif $ok then "met" else "not met" end) |";
"GPU: \(.device.name // "?") (\(.device.sms // "?") SMs, \((.device.total_memory // 0) / 1073741824 | round) GiB)",
"",
"| goal | measured | |",
"| --- | --- | --- |",
(step("qwen3guard-stream-0.6b"; 100) as $v | row("0.6B BF16 streamed token at 100 ≤ 1.5 ms"; $v; $v != null and $v <= 1.5)),
(step("qwen3guard-stream-0.6b"; 4000) as $v | row("0.6B BF16 streamed token at 4,000 ≤ 2.5 ms"; $v; $v != null and $v <= 2.5)),
(step("qwen3guard-stream-8b-awq"; 100) as $v | row("8B AWQ streamed token at 100 ≤ 3 ms"; $v; $v != null and $v <= 3)),
(agg("qwen3guard-stream-0.6b"; 256) as $v | row("256 streams of 0.6B BF16 ≥ 40,000 tokens/s"; $v; $v != null and $v >= 40000)),
(model("qwen3guard-stream-0.6b").prefill_tokens_per_s as $v | row("prefill 0.6B BF16 ≥ 50,000 tokens/s"; $v; $v != null and $v >= 50000)),
(model("qwen3guard-stream-8b-awq").prefill_tokens_per_s as $v | row("prefill 8B AWQ ≥ 8,000 tokens/s"; $v; $v != null and $v >= 8000)),
(model("qwen3guard-stream-8b-awq").weight_bytes as $v | row("8B AWQ weights ≤ 5.3 GB (bytes)"; $v; $v != null and $v <= 5.3e9)),
"",
"| model | upload s | prefill tok/s | step @100 ms (direct) | step @4,000 ms (direct) | 16 / 64 / 256 streams tok/s | tensor cores: warps ms ÷ their ms, step @100 | recompute ÷ cached step (prefix) |",
"| --- | --- | --- | --- | --- | --- | --- | --- |",
(.models | keys[] | select(endswith(":warps") | not)) as $m
| model($m) as $b
| (.models[$m + ":warps"].bench // null) as $w
| ($b.decode // []) as $d
| def at($p): ($d | map(select(.position == $p)) | first) // null;
  def pair($x): if $x == null then "–" else "\($x.ms_per_token | fmt) (\($x.ms_per_token_direct | fmt))" end;
  if $r.models[$m].error then "| \($m) | error: \($r.models[$m].error) | | | | | | |" else
  "| \($m) | \($b.upload_seconds | fmt) | \($b.prefill_tokens_per_s | if . == null then "–" else round end) | \(pair(at(100))) | \(pair(at(4000))) | \([16, 64, 256] | map(. as $s | agg($m; $s) | if . == null then "–" else round | tostring end) | join(" / ")) | \(if $w == null or at(100) == null then "–" else ((($w.decode // []) | map(select(.position == 100)) | first | .ms_per_token) / at(100).ms_per_token | fmt) + "×" end) | \(if $b.recompute == null then "–" else ($b.recompute.speedup | fmt) + "× (\($b.recompute.prefix))" end) |" end
	' "$report" || echo "(report.json: a figure could not be read)"
fi

# Against transformers on the same GPU and the same BF16 folder (scripts/gpu-anchor.py).
for size in 0.6b 8b; do
ours=$(found bench-cuda-$size-bf16.json) anchor=$(found anchor-$size-bf16.json)
if [ -n "$ours" ] && [ -n "$anchor" ]; then
	echo
	echo "| ${size^^} BF16, same folder and GPU | streamguard | transformers (bf16, sdpa, KV cache) | ratio | goal |"
	echo "| --- | --- | --- | --- | --- |"
	jq -rn --slurpfile o "$ours" --slurpfile a "$anchor" '
	def r: if . == null then "–" else (. * 1000 | round / 1000 | tostring) end;
	def ratio($x; $y): if $x == null or $y == null or $y == 0 then "–" else ($x / $y * 100 | round / 100 | tostring) + "×" end;
	$o[0] as $o | $a[0] as $a |
	def step($p): ($o.decode // [] | map(select(.position == $p)) | first | .ms_per_token) // null;
	def agg($s): ($o.batched // [] | map(select(.streams == $s)) | first | .tokens_per_s) // null;
	(["100", "4000"][] as $p | ($a.step_ms[$p] // null) as $t | step($p | tonumber) as $s |
		"| streamed token at \($p), batch 1 (ms) | \($s | r) | \($t | r) | \(ratio($t; $s)) | \(if $p == "100" then "≥ 5×" else "" end) |"),
	(["64", "256"][] as $b | ($a.batched[$b].tokens_per_s // null) as $t | agg($b | tonumber) as $s |
		"| \($b) streams (tokens/s) | \($s | r) | \($t | r) | \(ratio($s; $t)) | \(if $b == "256" then "≥ 3×" else "" end) |"),
	("| prefill (tokens/s) | \($o.prefill_tokens_per_s | r) | \($a.prefill_tokens_per_s | r) | \(ratio($o.prefill_tokens_per_s; $a.prefill_tokens_per_s)) | |"),
	("| a token by recomputing \($a.recompute_prefix // "?") tokens (transformers) against our cached step at 100 (ms) | \(step(100) | r) | \($a.recompute_ms | r) | \(ratio($a.recompute_ms; step(100))) | |"),
	(if $a.errors then "\nanchor errors: \($a.errors | tojson)" else empty end)' || echo "(the anchor files: a figure could not be read)"
fi
done

# The server on the GPU under load (loadtest --device cuda).
lt=$(found loadtest-cuda-0.6b-awq.json)
if [ -n "$lt" ]; then
	echo
	echo "| serve on the GPU (0.6B AWQ) | streams | tokens/s | per-token p50 / p99 ms | streams per step (mean) | checked / mismatches | ok |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	jq -r '. as $r | .phases[] | "| \(.name) | \($r.streams) | \(.tokens_per_second | round) | \(.append_p50_ms * 100 | round / 100) / \(.append_p99_ms * 100 | round / 100) | \(.batch_streams_mean * 10 | round / 10) | \(.checked) / \(.mismatches) | \($r.ok) |"' "$lt"
	jq -r 'if .batching_throughput_ratio then "\nbatching / one stream per step: \(.batching_throughput_ratio * 100 | round / 100)× throughput" else empty end' "$lt"
fi

# The CPU engine on the same host, 1 to 16 threads (0.6B AWQ; 8B when GPU_CHECK_CPU_8B ran it).
shopt -s nullglob
files=()
for f in "$out"/cpu-*-t*.json "$rest"/cpu-*-t*.json; do
	f=$(found "$(basename "$f")") && [ -n "$f" ] && files+=("$f")
done
if [ ${#files[@]} -gt 0 ]; then
	echo
	echo "| CPU threads | model | prefill tok/s | step @100 ms (median) | weight-read fraction of the probe | longest step ÷ step @100 | most streams: tok/s (÷ one stream) |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	for f in "${files[@]}"; do
		jq -r --arg f "$(basename "$f" .json)" '
		def r($n): if . == null then "–" else (. * $n | round / $n | tostring) end;
		(.decode // [] | last) as $d | (.batched // [] | max_by(.streams)) as $b |
		"| \(.threads) | \($f | sub("^cpu-"; "") | sub("-t[0-9]+$"; "")) | \(.prefill_tokens_per_s | r(1)) | \(.decode[0].median_ms | r(1000)) | \(.decode_weight_read_fraction | r(100)) | \(if $d == null or (.decode | length) < 2 then "–" else "@\($d.position): \($d.median_over_first | r(100))×" end) | \(if $b == null then "–" else "\($b.streams): \($b.tokens_per_s | r(1)) (\($b.over_single | r(100))×)" end) |"' "$f"
	done | sort -t'|' -k3,3 -k2,2n
fi
