#!/usr/bin/env bash
# The GPU check: everything that needs an NVIDIA GPU, in one run that needs
# nothing installed on the GPU machine (no Go, no CUDA toolkit; the driver
# only) and finishes in a few minutes.
#
#   scripts/gpu-check.sh build          # here, with Go: static binaries into .gpu-bin/
#   scripts/gpu-check.sh run OUTDIR     # on the GPU machine: runs them, writes OUTDIR/*.json
#   scripts/gpu-check.sh dry-run OUTDIR # here, after build: run against a CPU stand-in for the
#                                       # driver (needs g++), small models, to check the script
#
# `build` makes the cuda-tagged streamguard and the test binaries of the
# driver (internal/cuda), the backend (internal/gpu) and the library (guard,
# cuda-tagged), all with CGO_ENABLED=0. `run` lists the devices, runs the
# driver tests, the backend's checks against the CPU engine (logits, batch
# invariance, cache exhaustion) and the library's (verdicts on the GPU
# against the CPU), then the measurements (copy bandwidth, upload, prefill,
# single-stream steps at positions 100 and 4,000, 16/64/256 streams) for the
# 0.6B and 8B shapes with random BF16 weights, then `streamguard bench
# --device cuda` and the CPU engine at 1-16 threads on a 0.6B AWQ model, and
# writes:
#   OUTDIR/devices.json  streamguard devices --json
#   OUTDIR/tests.txt     the tests' verbose output
#   OUTDIR/report.json   the measurements (tensor cores on and off, graphs and direct launches)
#   OUTDIR/bench-cuda-0.6b-awq.json, cpu-0.6b-awq-t{1,2,4,8,16}.json  bench --json
#   OUTDIR/loadtest-cuda-0.6b-awq.json  loadtest --device cuda --json (serve on the GPU, 256 streams)
#   OUTDIR/bench-cuda-0.6b-bf16.json, anchor-0.6b-bf16.json  our GPU backend and transformers
#     (scripts/gpu-anchor.py) on one generated 0.6B BF16 folder; forward-cuda-0.6b-bf16.json, our
#     outputs that tools/reference/check_transformers.py compares with transformers (tests.txt)
#   (GPU_CHECK_ANCHOR_8B=1 adds bench-cuda-8b-bf16.json and anchor-8b-bf16.json, the 8B shape)
#   (GPU_CHECK_CPU_8B=1 adds cpu-8b-awq-t{1,4,16}.json, a few minutes more)
#   OUTDIR/summary.json  pass/fail of each step and the wall time (rewritten after each step)
# GPU_CHECK_PARTS="tests report anchor bench" (the default: all) runs only the parts named, so that
# a second call can finish what a first one, stopped at its time limit, did not.
# Back here, scripts/gpu-goals.sh OUTDIR prints each goal beside its figure (Markdown, needs jq).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.gpu-bin

case "${1:-}" in
build)
	set -e
	mkdir -p "$bin"
	export CGO_ENABLED=0
	go build -tags cuda -trimpath -ldflags="-s -w" -o "$bin/streamguard" ./cmd/streamguard
	go test -c -trimpath -ldflags="-s -w" -o "$bin/cuda.test" ./internal/cuda
	go test -c -trimpath -ldflags="-s -w" -o "$bin/gpu.test" ./internal/gpu
	go test -c -tags cuda -trimpath -ldflags="-s -w" -o "$bin/guard.test" ./guard
	grep -qxF "/$bin/" .git/info/exclude 2>/dev/null || echo "/$bin/" >>.git/info/exclude
	# Compressed: the binaries and the working tree travel to the GPU
	# machine together, under a size limit; run unpacks them.
	gzip -9 -f "$bin"/streamguard "$bin"/*.test
	ls -la "$bin"
	;;
dry-run)
	# The run below on this machine: the stand-in driver (internal/gpu/testdata/fakecuda) found
	# as libcuda.so.1, tiny models in the report, 2-layer ones for the CLI, few steps. Its figures
	# mean nothing; every step must pass.
	out=${2:?usage: scripts/gpu-check.sh dry-run OUTDIR}
	lib=$(mktemp -d)
	g++ -std=c++20 -O2 -shared -fPIC -pthread -o "$lib/libcuda.so.1" internal/gpu/testdata/fakecuda/fakecuda.cc || exit 1
	LD_LIBRARY_PATH="$lib" STREAMGUARD_GPU_PRESETS=tiny,tiny-awq GPU_CHECK_QUICK=1 "$0" run "$out"
	code=$?
	rm -rf "$lib"
	# The tables that turn a run's files into the goals' figures (scripts/gpu-goals.sh) read
	# what the run wrote.
	if [ $code -eq 0 ] && command -v jq >/dev/null; then
		scripts/gpu-goals.sh "$out" >"$out/goals.md" || code=1
	fi
	exit $code
	;;
run)
	out=${2:?usage: scripts/gpu-check.sh run OUTDIR}
	# GPU_CHECK_QUICK (dry-run): 2-layer models for the CLI steps, short benches, 1-2 threads.
	layers="" benchargs="--streams 16,64,256" cpuargs="--pp 512 --positions 100,4000 --steps 16 --streams 64" threads="1 2 4 8 16"
	loadargs="--streams 256 --duration 20s --baseline 5s"
	anchorbench="--pp 512 --positions 100,4000 --streams 64,256 --steps 30" anchorargs=""
	if [ -n "${GPU_CHECK_QUICK:-}" ]; then
		anchorbench="--pp 32 --positions 100 --streams 4 --steps 2" anchorargs="--positions 100 --streams 4 --prefill 32 --recompute 32 --steps 3"
		layers="--layers 2" benchargs="--pp 32 --positions 100,600 --streams 4 --steps 2" cpuargs="--pp 32 --positions 100,600 --steps 2 --streams 4" threads="1 2"
		loadargs="--streams 3 --conversations 3 --prompt-words 4 --response-tokens 6 --duration 2s --baseline 1s"
	fi
	mkdir -p "$out"
	start=$(date +%s)
	for f in "$bin"/*.gz; do
		[ -e "$f" ] && gunzip -f "$f"
	done
	# GPU_CHECK_PARTS picks parts (default all): tests (driver, backend, guard, CLI), report,
	# anchor (ours and transformers on one folder), bench (bench --device cuda on AWQ, the CPU's
	# scaling, the load test) — so that a second call can run what a first one cut short did not.
	parts=" ${GPU_CHECK_PARTS:-tests report anchor bench} "
	want() { [[ "$parts" == *" $1 "* ]]; }
	declare -A status
	summary() { # summary.json: each step's exit status so far and the wall time
		{
			printf '{"wall_s": %d, "parts": "%s"' $(($(date +%s) - start)) "$(echo $parts)"
			for k in "${!status[@]}"; do printf ', "%s": %d' "$k" "${status[$k]}"; done
			printf '}\n'
		} >"$out/summary.json"
	}
	step() { # NAME COMMAND...: runs it, records its exit status
		local name=$1
		shift
		echo "== $name: $*" | tee -a "$out/tests.txt"
		"$@" >>"$out/tests.txt" 2>&1
		status[$name]=$?
		echo "== $name: exit ${status[$name]}" | tee -a "$out/tests.txt"
		summary
	}
	export STREAMGUARD_REQUIRE_GPU=1 # a GPU test that cannot find the GPU fails rather than skips
	nvidia-smi >>"$out/tests.txt" 2>&1 || true
	"$bin/streamguard" devices --json >"$out/devices.json" 2>&1
	status[devices]=$?
	cat "$out/devices.json"
	# The test binaries read their testdata relative to their package.
	if want tests; then
		step driver bash -c "cd internal/cuda && ../../$bin/cuda.test -test.v -test.count=1 -test.timeout 2m"
		step backend bash -c "cd internal/gpu && ../../$bin/gpu.test -test.v -test.count=1 -test.timeout 4m -test.run 'TestPTX|TestRepackAWQ|TestKernel|TestForwardMatchesCPU|TestBatchInvariance|TestCacheExhaustion|TestGraphsMatchDirect'"
		step guard bash -c "cd guard && ../$bin/guard.test -test.v -test.count=1 -test.timeout 2m -test.run 'TestGPUMatchesCPU|TestDeviceChoice|TestDeviceAWQLoad'"
		# The CLI end to end: a synthetic 0.6B-shaped BF16 model judged on the GPU and on the CPU.
		step cli bash -c "tmp=\$(mktemp -d) && $bin/streamguard gen-model --preset qwen3guard-stream-0.6b --dtype bf16 $layers --out \$tmp/m >/dev/null &&
			for d in cuda cpu; do echo \"-- --device \$d\"; $bin/streamguard moderate --model \$tmp/m --device \$d --prompt 'How do I bake bread?' --response 'Mix flour and water, knead, let it rise, bake.'; echo \"exit \$?\"; done; rm -rf \$tmp"
	fi
	want report && step report bash -c "cd internal/gpu && STREAMGUARD_GPU_REPORT=$(realpath "$out")/report.json ../../$bin/gpu.test -test.v -test.count=1 -test.timeout 5m -test.run '^TestReport$'"
	# The anchor in the same run: Hugging Face transformers (bf16, sdpa, its KV cache, the eight heads)
	# on a generated 0.6B BF16 folder, beside bench --device cuda on the same folder; then our GPU
	# outputs for two id sequences checked against transformers in float32. Needs the GPU machine's
	# python3 with torch and transformers; skipped (and said) where they are missing.
	if want anchor; then
		anchordir=$(mktemp -d)
		step anchor-model "$bin/streamguard" gen-model --preset qwen3guard-stream-0.6b --dtype bf16 $layers --seed 11 --out "$anchordir/m"
		step bench-cuda-bf16 bash -c "$bin/streamguard bench --model $anchordir/m --device cuda $anchorbench --json >$out/bench-cuda-0.6b-bf16.json"
		if python3 -c 'import torch, transformers' 2>/dev/null; then
			step anchor bash -c "python3 scripts/gpu-anchor.py --model $anchordir/m --out $out/anchor-0.6b-bf16.json $anchorargs"
			printf '{"cases": [{"name": "a", "ids": [%s]}, {"name": "b", "ids": [%s]}]}\n' "$(seq -s, 100 37 2468)" "$(seq -s, 9 101 1726)" >"$anchordir/ids.json"
			step anchor-accuracy bash -c "$bin/streamguard forward --model $anchordir/m --device cuda --ids-file $anchordir/ids.json --out $out/forward-cuda-0.6b-bf16.json &&
				python3 tools/reference/check_transformers.py --model $anchordir/m --golden $out/forward-cuda-0.6b-bf16.json --device cuda --dtype float32 --atol 1"
			if [ -n "${GPU_CHECK_ANCHOR_8B:-}" ]; then
				# Opt-in (a few minutes more: a 16 GB folder): the same pair on the 8B shape in BF16.
				step anchor-model-8b "$bin/streamguard" gen-model --preset qwen3guard-stream-8b --dtype bf16 $layers --seed 11 --out "$anchordir/m8"
				step bench-cuda-bf16-8b bash -c "$bin/streamguard bench --model $anchordir/m8 --device cuda $anchorbench --json >$out/bench-cuda-8b-bf16.json"
				step anchor-8b bash -c "python3 scripts/gpu-anchor.py --model $anchordir/m8 --out $out/anchor-8b-bf16.json $anchorargs"
			fi
		else
			echo "== anchor: skipped, this python3 has no torch or transformers" | tee -a "$out/tests.txt"
		fi
		rm -rf "$anchordir"
	fi
	# The same measurements through the CLI (bench --device cuda) on a synthetic 0.6B AWQ model, and
	# this host's CPU cores on it from 1 to 16 threads: the CPU engine's scaling, and its goals that
	# a 2-core machine bounds (the weight-read fraction of a step, 64 streams against one, the step at
	# 4,000 against 100) where compute per byte of bandwidth is several times higher. Last, so that a
	# run cut short still has everything above.
	if want bench; then
		benchdir=$(mktemp -d)
		step bench-model "$bin/streamguard" gen-model --preset qwen3guard-stream-0.6b --dtype awq $layers --out "$benchdir/m"
		step bench-cuda bash -c "$bin/streamguard bench --model $benchdir/m --device cuda $benchargs --json >$out/bench-cuda-0.6b-awq.json"
		step cpu-scaling bash -c "for t in $threads; do $bin/streamguard bench --model $benchdir/m --threads \$t $cpuargs --bandwidth-mib 512 --json >$out/cpu-0.6b-awq-t\$t.json || exit 1; done"
		# The server on the GPU under load: 256 conversations over HTTP, every verdict checked against a
		# solo run on the GPU, with and without batching, SIGTERM under load at the end.
		step loadtest bash -c "$bin/streamguard loadtest --model $benchdir/m --device cuda $loadargs --json >$out/loadtest-cuda-0.6b-awq.json"
		if [ -n "${GPU_CHECK_CPU_8B:-}" ]; then
			# Opt-in (a few minutes more): the 8B's CPU scaling on the same cores.
			step bench-model-8b "$bin/streamguard" gen-model --preset qwen3guard-stream-8b --dtype awq --out "$benchdir/m8"
			step cpu-scaling-8b bash -c "for t in 1 4 16; do $bin/streamguard bench --model $benchdir/m8 --threads \$t --pp 64 --positions 100 --steps 4 --streams '' --bandwidth-mib 512 --json >$out/cpu-8b-awq-t\$t.json || exit 1; done"
		fi
		rm -rf "$benchdir"
	fi
	summary
	cat "$out/summary.json"
	grep -E '^(---|ok|FAIL)|relative L2|GB/s' "$out/tests.txt" | head -60
	;;
*)
	echo "usage: scripts/gpu-check.sh build | run OUTDIR | dry-run OUTDIR" >&2
	exit 2
	;;
esac
