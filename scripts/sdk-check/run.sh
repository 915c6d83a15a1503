#!/usr/bin/env bash
# SDK check: drives `streamguard serve` (a tiny synthetic model, the
# chat-completions proxy in front of a fake upstream) with the official
# OpenAI SDK for Node, pinned in package-lock.json. Skipped, with a note,
# where node or npm is not installed.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "sdk-check: SKIPPED: node and npm are not installed (apt-get install nodejs npm); the OpenAI SDK check did not run"
	exit 0
fi
echo "sdk-check: node $(node --version)"
npm ci --no-audit --no-fund --loglevel=error

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# STREAMGUARD_BIN runs a prebuilt binary instead of building this checkout.
if [ -n "${STREAMGUARD_BIN:-}" ]; then
	cp "$STREAMGUARD_BIN" "$tmp/streamguard"
else
	go build -o "$tmp/streamguard" ../../cmd/streamguard
fi
"$tmp/streamguard" gen-model --preset tiny --out "$tmp/model" >/dev/null

# Two tenants: "ok" flags nothing a random model says (P(Safe) is never 0,
# so a threshold of 1 is never reached); "flag" flags every verdict
# (threshold 0, strict mode, debounce 1).
cats='"Violent","Sexual Content or Sexual Acts","Suicide & Self-Harm","Politically Sensitive Topics","PII","Copyright Violation","Non-violent Illegal Acts","Unethical Acts","Jailbreak"'
thresholds() { local v=$1 out="" c; IFS=','; for c in $cats; do out+="${out:+,}$c: $v"; done; unset IFS; echo "{$out}"; }
key_ok=sk-sdk-ok key_flag=sk-sdk-flag
hash_ok=$(printf '%s\n' "$key_ok" | "$tmp/streamguard" serve --hash-key)
hash_flag=$(printf '%s\n' "$key_flag" | "$tmp/streamguard" serve --hash-key)
cat >"$tmp/tenants.json" <<JSON
{"tenants": [
  {"name": "ok", "api_key_sha256": ["$hash_ok"], "policy": {"mode": "strict", "thresholds": $(thresholds 1)}},
  {"name": "flag", "api_key_sha256": ["$hash_flag"], "policy": {"mode": "strict", "debounce": 1, "thresholds": $(thresholds 0)}}
]}
JSON

node fake-upstream.mjs >"$tmp/upstream.out" &
pids+=($!)
serve_out="$tmp/serve.out"
for _ in $(seq 100); do grep -q listening "$tmp/upstream.out" && break; sleep 0.1; done
up_port=$(awk '/listening/ {print $2}' "$tmp/upstream.out")
[ -n "$up_port" ] || { echo "sdk-check: the fake upstream did not start"; exit 1; }

"$tmp/streamguard" serve --model "$tmp/model" --model-name sg-tiny --addr 127.0.0.1:0 --json \
	--config "$tmp/tenants.json" --max-stream-tokens 1024 --upstream "http://127.0.0.1:$up_port" \
	--audit-log "$tmp/audit.log" >"$serve_out" 2>"$tmp/serve.err" &
pids+=($!)
addr=""
for _ in $(seq 300); do
	addr=$(grep -o '"addr":"[^"]*"' "$serve_out" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
	[ -n "$addr" ] && break
	sleep 0.1
done
[ -n "$addr" ] || { echo "sdk-check: streamguard serve did not start"; cat "$tmp/serve.err"; exit 1; }

SG_URL="http://$addr" SG_MODEL=sg-tiny SG_KEY_OK=$key_ok SG_KEY_FLAG=$key_flag node check.mjs
