#!/usr/bin/env bash
# The container image, built and run offline: the static binary on a scratch
# base with the final stage of the repository's Dockerfile (its USER, ENV,
# VOLUME, HEALTHCHECK, ENTRYPOINT and CMD, taken from the Dockerfile itself),
# since the Dockerfile's own base images come from a registry. Checks that the
# container runs read-only as a non-root user, answers /healthz, /readyz and a
# moderation on a tiny synthetic model, and that the image's HEALTHCHECK
# passes. Needs podman (with runc, or docker); without a container runtime
# that can run containers here it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."

engine=""
if command -v podman >/dev/null 2>&1; then
	engine="podman"
	# crun refuses hybrid cgroup hierarchies, which some VMs have; runc runs there.
	command -v runc >/dev/null 2>&1 && engine="podman --runtime runc"
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	engine="docker"
fi
if [ -z "$engine" ]; then
	echo "image-check: skipped: no container runtime (podman, or docker with a daemon) on this machine"
	exit 0
fi

tmp=$(mktemp -d)
name="sg-image-check-$$"
# podman's default ulimits (raised open files and processes) are refused
# where the runtime may not raise limits (some VMs): keep the host's.
if [[ "$engine" == podman* ]]; then
	printf '[containers]\ndefault_ulimits = []\n' >"$tmp/containers.conf"
	export CONTAINERS_CONF="$tmp/containers.conf"
fi
cleanup() { $engine rm -f "$name" >/dev/null 2>&1; $engine rmi -f "localhost/$name" >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "image-check: FAIL $*" >&2; $engine logs "$name" 2>&1 | tail -20 >&2; exit 1; }

CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o "$tmp/ctx/streamguard" ./cmd/streamguard || fail "go build"
mkdir -p "$tmp/ctx/cache/huggingface"
# The Dockerfile's final stage, its base replaced by scratch and its COPY --from=build sources by the context.
awk '/^FROM \$\{RUNTIME_BASE\}/ {f=1; print "FROM scratch"; next} f' Dockerfile |
	sed -E 's#^COPY --from=build (--chown=[^ ]+ )?/out/#COPY \1#' >"$tmp/ctx/Containerfile"
grep -q '^HEALTHCHECK' "$tmp/ctx/Containerfile" || fail "no HEALTHCHECK in the Dockerfile's final stage"
if ! out=$($engine build --format docker -t "localhost/$name" -f "$tmp/ctx/Containerfile" "$tmp/ctx" 2>&1); then
	if grep -qiE "permission|not supported|cgroup" <<<"$out"; then
		echo "image-check: skipped: $engine cannot build here: $(tail -1 <<<"$out")"
		exit 0
	fi
	fail "build: $out"
fi

"$tmp/ctx/streamguard" gen-model --preset tiny --out "$tmp/model" >/dev/null || fail "gen-model"
chmod -R a+rX "$tmp/model"
port=$((30000 + RANDOM % 20000))
if ! out=$($engine run -d --name "$name" --read-only -p "127.0.0.1:$port:8080" -v "$tmp/model:/model:ro" \
	"localhost/$name" serve --addr 0.0.0.0:8080 --model /model 2>&1); then
	if grep -qiE "permission|not supported|cgroup" <<<"$out"; then
		echo "image-check: skipped: $engine cannot run containers here: $(tail -1 <<<"$out")"
		exit 0
	fi
	fail "run: $out"
fi
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
[ "$(curl -s "http://127.0.0.1:$port/healthz")" = "ok" ] || fail "/healthz did not answer ok"
[ "$(curl -s "http://127.0.0.1:$port/readyz")" = "ready" ] || fail "/readyz did not answer ready"
curl -s "http://127.0.0.1:$port/v1/moderations" -d '{"input": "How do I bake bread?"}' | grep -q '"results"' || fail "no moderation answer"
$engine healthcheck run "$name" >/dev/null 2>&1 || fail "the image's HEALTHCHECK failed"
user=$($engine inspect "$name" --format '{{.Config.User}}')
ro=$($engine inspect "$name" --format '{{.HostConfig.ReadonlyRootfs}}')
[ "$user" = "65532:65532" ] && [ "$ro" = "true" ] || fail "user $user, read-only root $ro"
$engine exec "$name" /usr/local/bin/streamguard gen-model --preset tiny --out /x >/dev/null 2>&1 && fail "the root filesystem took a write"
size=$($engine images "localhost/$name" --format '{{.Size}}' | head -1)
echo "image-check: ok: scratch base + static binary ($size) built with the Dockerfile's final stage; runs as $user with a read-only root; /healthz, /readyz, a moderation and the HEALTHCHECK answer ($engine)"
