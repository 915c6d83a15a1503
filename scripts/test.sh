#!/usr/bin/env bash
# The project's test command: formatting, vet, staticcheck, the race-enabled
# test suite, and one iteration of every benchmark (a smoke run at small sizes;
# real-shape runs belong to `streamguard bench`).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './_*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...
# The GPU backend's files build only with the cuda tag.
go vet -tags cuda ./guard ./cmd/streamguard

echo "== staticcheck"
STATICCHECK_VERSION=v0.8.2
if ! command -v staticcheck >/dev/null 2>&1 || ! staticcheck -version 2>/dev/null | grep -q "${STATICCHECK_VERSION#v}"; then
	GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"
	export PATH="$(go env GOPATH)/bin:$PATH"
fi
staticcheck ./...
staticcheck -tags cuda ./guard ./cmd/streamguard

echo "== go test -race"
go test -race -count=1 -timeout 30m ./...

echo "== doc-check (README and docs/: links, citations, README commands on a tiny model)"
bash scripts/doc-check.sh

echo "== GPU check scripts: syntax, and the goals' tables of a fixture (skipped without jq)"
bash -n scripts/gpu-check.sh
bash -n scripts/gpu-goals.sh
if command -v python3 >/dev/null 2>&1; then
	python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' scripts/gpu-anchor.py tools/reference/check_transformers.py
fi
if command -v jq >/dev/null 2>&1; then
	diff -u scripts/testdata/gpu-check-out/goals.golden.md <(bash scripts/gpu-goals.sh scripts/testdata/gpu-check-out)
	bash scripts/gpu-goals-partial.sh
else
	echo "skipped: no jq"
fi
# The one GPU run, rehearsed against the CPU stand-in for the driver: every step passes, within its
# time limits, and what it leaves in OUTDIR is at most the 8 files a lent GPU machine returns.
if command -v g++ >/dev/null 2>&1 && command -v jq >/dev/null 2>&1; then
	echo "== GPU check script: build and a dry run against the CPU stand-in for the driver"
	gpu=$(mktemp -d)
	GPU_CHECK_BIN="$gpu/bin" bash scripts/gpu-check.sh build >/dev/null
	GPU_CHECK_BIN="$gpu/bin" bash scripts/gpu-check.sh dry-run "$gpu/out" >"$gpu/log" 2>&1 || {
		cat "$gpu/log"
		exit 1
	}
	n=$(find "$gpu/out" -type f ! -name goals.md | wc -l)
	[ "$n" -le 8 ] || {
		echo "the GPU run leaves $n files in OUTDIR; a lent machine returns 8" >&2
		exit 1
	}
	echo "dry run: every step passed; $n files to bring back"
	rm -rf "$gpu"
else
	echo "skipped (GPU check dry run): no g++ or jq"
fi
# The anchor script's whole path on the CPU, where Debian's python3 has torch (transformers replaced
# by the stand-in in scripts/testdata/transformers-standin).
if /usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1; then
	anchor=$(mktemp -d)
	go run ./cmd/streamguard gen-model --preset tiny --dtype bf16 --seed 11 --out "$anchor/m" >/dev/null
	PYTHONPATH=scripts/testdata/transformers-standin /usr/bin/python3 scripts/gpu-anchor.py --model "$anchor/m" --out "$anchor/a.json" \
		--device cpu --positions 10,40 --streams 4 --prefill 32 --recompute 32 --steps 3 >/dev/null
	/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert "errors" not in r and r["step_ms"]["40"] > 0 and r["batched"]["4"]["tokens_per_s"] > 0 and r["prefill_tokens_per_s"] > 0 and r["recompute_ms"] > 0, r' "$anchor/a.json"
	rm -rf "$anchor"
else
	echo "skipped: /usr/bin/python3 has no torch (the anchor script's CPU run)"
fi

echo "== OpenAI SDK check (Node; skipped without node)"
bash scripts/sdk-check/run.sh

echo "== deploy: Kubernetes overlays rendered and strictly decoded, Envoy and HAProxy configs (deploy/kubernetes/validate, a module of its own)"
(cd deploy/kubernetes/validate && go vet ./... && staticcheck ./... && go test -count=1 ./...)

echo "== stream-affine routing through HAProxy (three replicas; skipped without haproxy)"
bash scripts/haproxy-check.sh

echo "== container image: the Dockerfile's final stage on scratch, run read-only (skipped without podman or docker)"
bash scripts/image-check.sh

echo "== benchmarks (one iteration each)"
go test -run '^$' -bench . -benchtime 1x -timeout 20m ./...
