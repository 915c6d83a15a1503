#!/usr/bin/env bash
# Stream-affine routing through HAProxy, end to end on this machine: builds
# streamguard, writes a tiny synthetic model, starts three `serve` replicas
# on 127.0.0.1 and HAProxy with deploy/haproxy/haproxy.cfg in front of them,
# then (scripts/haproxy-check/main.go) runs every operation of many streams
# through HAProxy, checks each stream stays on one replica, kills a replica
# and checks its streams answer 404 stream_lost while the others go on, then
# resumes them from the conversation so far and checks every verdict from
# there on against a solo run's.
#
# Needs haproxy: installed with apt-get when missing (as root, on Debian);
# where it cannot be installed the check prints SKIPPED and exits 0.
# Extra arguments go to the Go driver (e.g. --streams 30).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v haproxy >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
		echo "haproxy-check: installing haproxy with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq haproxy >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq haproxy >/dev/null 2>&1; } || true
	fi
fi
if ! command -v haproxy >/dev/null 2>&1; then
	echo "haproxy-check: SKIPPED: haproxy is not installed and could not be installed (apt-get install haproxy); the routing check did not run"
	exit 0
fi
echo "haproxy-check: $(haproxy -v | head -n 1)"
haproxy -c -q -f deploy/haproxy/haproxy.cfg

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/streamguard" ./cmd/streamguard
go build -o "$tmp/haproxy-check" ./scripts/haproxy-check
"$tmp/streamguard" gen-model --preset tiny --seed 1 --out "$tmp/model" >/dev/null
"$tmp/haproxy-check" --streamguard "$tmp/streamguard" --model "$tmp/model" \
	--haproxy "$(command -v haproxy)" --config deploy/haproxy/haproxy.cfg "$@"
