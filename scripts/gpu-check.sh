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
# writes, in OUTDIR (the lent machine returns at most 8 files, so few are kept there and the rest
# are packed, after every step, into one):
#   OUTDIR/tests.txt     the tests' verbose output, every step's command and exit status
#   OUTDIR/summary.json  each step's exit status (124: stopped at its time limit; 125: skipped, the
#                        run's time spent or, for the anchor, no torch) and the wall time
#   OUTDIR/report.json   the measurements (tensor cores on and off, graphs and direct launches)
#   OUTDIR/anchor-0.6b-bf16.json  transformers (scripts/gpu-anchor.py) on the anchor's folder
#   OUTDIR/rest.tgz      the rest: devices.json (streamguard devices --json);
#     bench-cuda-0.6b-awq.json, cpu-0.6b-awq-t{1,2,4,8,16}.json (bench --json);
#     loadtest-cuda-0.6b-awq.json (loadtest --device cuda --json: serve on the GPU, 256 streams);
#     bench-cuda-0.6b-bf16.json (our GPU backend on the anchor's folder) and forward-cuda-0.6b-bf16.json
#     (our outputs, which tools/reference/check_transformers.py compares with transformers: tests.txt)
#   (GPU_CHECK_ANCHOR_8B=1 adds bench-cuda-8b-bf16.json and OUTDIR/anchor-8b-bf16.json, the 8B shape)
#   (GPU_CHECK_CPU_8B=1 adds cpu-8b-awq-t{1,4,16}.json, a few minutes more)
# Every step has a time limit, and the whole run GPU_CHECK_BUDGET_S seconds (540 by default, inside
# the lent machine's 600 s a command): what is left when a step starts bounds it, and a step that
# finds the time spent is skipped, so the run always ends with its files written. The steps go in
# order of what a first GPU run must tell: the driver, the backend's correctness, the measurements,
# the library, the CLI's bench, the anchor, the server, the CPU engine's scaling, the CLI.
# GPU_CHECK_PARTS="tests report anchor bench" (the default: all) runs only the parts named.
# Back here, scripts/gpu-goals.sh OUTDIR prints each goal beside its figure (Markdown, needs jq).
set -uo pipefail
cd "$(dirname "$0")/.."
# GPU_CHECK_BIN: where the binaries are (a dry run works on a copy, so that .gpu-bin stays packed).
bin=${GPU_CHECK_BIN:-.gpu-bin}

case "${1:-}" in
build)
	set -e
	mkdir -p "$bin"
	export CGO_ENABLED=0
	go build -tags cuda -trimpath -ldflags="-s -w" -o "$bin/streamguard" ./cmd/streamguard
	go test -c -trimpath -ldflags="-s -w" -o "$bin/cuda.test" ./internal/cuda
	go test -c -trimpath -ldflags="-s -w" -o "$bin/gpu.test" ./internal/gpu
	go test -c -tags cuda -trimpath -ldflags="-s -w" -o "$bin/guard.test" ./guard
	case $bin in
	/*) ;; # outside the checkout
	*) grep -qxF "/$bin/" .git/info/exclude 2>/dev/null || echo "/$bin/" >>.git/info/exclude ;;
	esac
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
	# The binaries are unpacked in a copy: .gpu-bin stays as build left it, small enough to carry.
	cp -r "$bin" "$lib/bin"
	GPU_CHECK_BIN="$lib/bin" LD_LIBRARY_PATH="$lib" STREAMGUARD_GPU_PRESETS=tiny,tiny-awq GPU_CHECK_QUICK=1 "$0" run "$out"
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
	# The steps run in package folders: the binaries' path made absolute, and there.
	bin=$(realpath -e "$bin") && { [ -e "$bin/streamguard.gz" ] || [ -x "$bin/streamguard" ]; } || {
		echo "no binaries in ${GPU_CHECK_BIN:-.gpu-bin}: run scripts/gpu-check.sh build first" >&2
		exit 2
	}
	mkdir -p "$out"
	start=$(date +%s)
	budget=${GPU_CHECK_BUDGET_S:-540}
	work=$(mktemp -d) # the files packed into OUTDIR/rest.tgz
	for f in "$bin"/*.gz; do
		[ -e "$f" ] && gunzip -f "$f"
	done
	chmod +x "$bin"/* 2>/dev/null
	# One JIT compile of the PTX for all the processes below, wherever the home folder is read-only.
	export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/streamguard-cuda-cache} CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-1073741824}
	parts=" ${GPU_CHECK_PARTS:-tests report anchor bench} "
	want() { [[ "$parts" == *" $1 "* ]]; }
	declare -A status
	summary() { # summary.json (each step's exit status so far, the wall time) and rest.tgz
		{
			printf '{"wall_s": %d, "budget_s": %d, "parts": "%s"' $(($(date +%s) - start)) "$budget" "$(echo $parts)"
			for k in "${!status[@]}"; do printf ', "%s": %d' "$k" "${status[$k]}"; done
			printf '}\n'
		} >"$out/summary.json.part" && mv "$out/summary.json.part" "$out/summary.json"
		tar -C "$work" -czf "$out/rest.tgz.part" . && mv "$out/rest.tgz.part" "$out/rest.tgz"
	}
	step() { # NAME SECONDS COMMAND...: runs it for at most SECONDS (and the run's time left), records its exit status
		local name=$1 max=$2
		shift 2
		local left=$((budget - ($(date +%s) - start)))
		if [ "$left" -lt 15 ]; then
			status[$name]=125
			echo "== $name: skipped, the run's ${budget}s are spent" | tee -a "$out/tests.txt"
			summary
			return
		fi
		local t=$((max < left ? max : left))
		echo "== $name (at most ${t}s): $*" | tee -a "$out/tests.txt"
		timeout -k 5 "$t" "$@" >>"$out/tests.txt" 2>&1
		status[$name]=$?
		echo "== $name: exit ${status[$name]} after $(($(date +%s) - start))s" | tee -a "$out/tests.txt"
		summary
	}
	export STREAMGUARD_REQUIRE_GPU=1 # a GPU test that cannot find the GPU fails rather than skips
	step nvidia-smi 20 bash -c 'command -v nvidia-smi >/dev/null || { echo "no nvidia-smi here"; exit 0; }; nvidia-smi'
	step devices 30 bash -c "$bin/streamguard devices --json >$work/devices.json"
	cat "$work/devices.json"
	# The test binaries read their testdata relative to their package.
	if want tests; then
		step driver 90 bash -c "cd internal/cuda && $bin/cuda.test -test.v -test.count=1 -test.timeout 80s"
		step backend 180 bash -c "cd internal/gpu && $bin/gpu.test -test.v -test.count=1 -test.timeout 170s -test.run 'TestPTX|TestRepackAWQ|TestKernel|TestForwardMatchesCPU|TestBatchInvariance|TestCacheExhaustion|TestGraphsMatchDirect'"
	fi
	want report && step report 240 bash -c "cd internal/gpu && STREAMGUARD_GPU_REPORT=$(realpath "$out")/report.json $bin/gpu.test -test.v -test.count=1 -test.timeout 230s -test.run '^TestReport$'"
	if want tests; then
		step guard 90 bash -c "cd guard && $bin/guard.test -test.v -test.count=1 -test.timeout 80s -test.run 'TestGPUMatchesCPU|TestDeviceChoice|TestDeviceAWQLoad'"
	fi
	# The same measurements through the CLI (bench --device cuda) on a synthetic 0.6B AWQ model.
	benchdir=$(mktemp -d)
	if want bench; then
		step bench-model 60 "$bin/streamguard" gen-model --preset qwen3guard-stream-0.6b --dtype awq $layers --out "$benchdir/m"
		step bench-cuda 90 bash -c "$bin/streamguard bench --model $benchdir/m --device cuda $benchargs --json >$work/bench-cuda-0.6b-awq.json"
	fi
	# The anchor: Hugging Face transformers (bf16, sdpa, its KV cache, the eight heads) on a generated
	# 0.6B BF16 folder, beside bench --device cuda on the same folder; then our GPU outputs for two id
	# sequences checked against transformers in float32. Needs the GPU machine's python3 with torch and
	# transformers; skipped (status 125, and a line) where they are missing.
	if want anchor; then
		anchordir=$(mktemp -d)
		step anchor-model 60 "$bin/streamguard" gen-model --preset qwen3guard-stream-0.6b --dtype bf16 $layers --seed 11 --out "$anchordir/m"
		step bench-cuda-bf16 90 bash -c "$bin/streamguard bench --model $anchordir/m --device cuda $anchorbench --json >$work/bench-cuda-0.6b-bf16.json"
		if python3 -c 'import torch, transformers' 2>/dev/null; then
			step anchor 150 bash -c "python3 scripts/gpu-anchor.py --model $anchordir/m --out $out/anchor-0.6b-bf16.json $anchorargs"
			printf '{"cases": [{"name": "a", "ids": [%s]}, {"name": "b", "ids": [%s]}]}\n' "$(seq -s, 100 37 2468)" "$(seq -s, 9 101 1726)" >"$anchordir/ids.json"
			step anchor-accuracy 90 bash -c "$bin/streamguard forward --model $anchordir/m --device cuda --ids-file $anchordir/ids.json --out $work/forward-cuda-0.6b-bf16.json &&
				python3 tools/reference/check_transformers.py --model $anchordir/m --golden $work/forward-cuda-0.6b-bf16.json --device cuda --dtype float32 --atol 1"
			if [ -n "${GPU_CHECK_ANCHOR_8B:-}" ]; then
				# Opt-in (a few minutes more: a 16 GB folder; not with the rest in one call): the same
				# pair on the 8B shape in BF16.
				step anchor-model-8b 120 "$bin/streamguard" gen-model --preset qwen3guard-stream-8b --dtype bf16 $layers --seed 11 --out "$anchordir/m8"
				step bench-cuda-bf16-8b 120 bash -c "$bin/streamguard bench --model $anchordir/m8 --device cuda $anchorbench --json >$work/bench-cuda-8b-bf16.json"
				step anchor-8b 240 bash -c "python3 scripts/gpu-anchor.py --model $anchordir/m8 --out $out/anchor-8b-bf16.json $anchorargs"
			fi
		else
			status[anchor]=125
			echo "== anchor: skipped, this python3 has no torch or transformers" | tee -a "$out/tests.txt"
			summary
		fi
		rm -rf "$anchordir"
	fi
	# The server on the GPU under load: 256 conversations over HTTP, every verdict checked against a
	# solo run on the GPU, with and without batching, SIGTERM under load at the end. Then this host's
	# CPU cores on the AWQ folder from 1 to 16 threads: the CPU engine's scaling, and its goals that a
	# 2-core machine bounds (the weight-read fraction of a step, 64 streams against one, the step at
	# 4,000 against 100) where compute per byte of bandwidth is several times higher.
	if want bench; then
		step loadtest 90 bash -c "$bin/streamguard loadtest --model $benchdir/m --device cuda $loadargs --json >$work/loadtest-cuda-0.6b-awq.json"
		step cpu-scaling 120 bash -c "for t in $threads; do $bin/streamguard bench --model $benchdir/m --threads \$t $cpuargs --bandwidth-mib 512 --json >$work/cpu-0.6b-awq-t\$t.json || exit 1; done"
		if [ -n "${GPU_CHECK_CPU_8B:-}" ]; then
			# Opt-in (a few minutes more): the 8B's CPU scaling on the same cores.
			step bench-model-8b 90 "$bin/streamguard" gen-model --preset qwen3guard-stream-8b --dtype awq --out "$benchdir/m8"
			step cpu-scaling-8b 180 bash -c "for t in 1 4 16; do $bin/streamguard bench --model $benchdir/m8 --threads \$t --pp 64 --positions 100 --steps 4 --streams '' --bandwidth-mib 512 --json >$work/cpu-8b-awq-t\$t.json || exit 1; done"
		fi
	fi
	rm -rf "$benchdir"
	# The CLI end to end: a synthetic 0.6B-shaped BF16 model judged on the GPU and on the CPU; the step
	# fails if either moderate does (exit 3, flagged, counts as judged).
	if want tests; then
		step cli 90 bash -c "tmp=\$(mktemp -d) && $bin/streamguard gen-model --preset qwen3guard-stream-0.6b --dtype bf16 $layers --out \$tmp/m >/dev/null || exit 1
			rc=0; for d in cuda cpu; do echo \"-- --device \$d\"; $bin/streamguard moderate --model \$tmp/m --device \$d --prompt 'How do I bake bread?' --response 'Mix flour and water, knead, let it rise, bake.'; r=\$?; echo \"exit \$r\"; [ \$r = 0 ] || [ \$r = 3 ] || rc=1; done; rm -rf \$tmp; exit \$rc"
	fi
	summary
	rm -rf "$work"
	cat "$out/summary.json"
	grep -E '^(---|ok|FAIL)|relative L2|GB/s' "$out/tests.txt" | head -60
	# Exit 0 when every step passed or was skipped for want of torch.
	failed=0
	for k in "${!status[@]}"; do
		if [ "${status[$k]}" != 0 ] && ! { [ "$k" = anchor ] && [ "${status[$k]}" = 125 ]; }; then
			failed=1
		fi
	done
	exit $failed
	;;
*)
	echo "usage: scripts/gpu-check.sh build | run OUTDIR | dry-run OUTDIR" >&2
	exit 2
	;;
esac
