# syntax=docker/dockerfile:1
#
# streamguard as a container image: one static binary (no cgo) on a
# distroless base, running as a non-root user, with nothing written outside
# the /cache volume (the Hugging Face cache), so the root filesystem can be
# mounted read-only.
#
#   docker build -t streamguard .
#   docker run --rm --read-only -p 8080:8080 -v sg-cache:/cache streamguard
#   docker run --rm --read-only -v sg-cache:/cache streamguard pull Qwen/Qwen3Guard-Stream-0.6B
#
# The default command serves Qwen/Qwen3Guard-Stream-0.6B from the cache on
# 0.0.0.0:8080, pulling it into /cache first when the cache lacks it (set
# HF_HUB_OFFLINE=1 to forbid that). The HEALTHCHECK probes port 8080: keep
# --addr on that port when you replace the command. See docs/DEPLOY.md.
#
# The GPU image adds the CUDA backend (`serve --device auto|cuda`). It is
# still built without cgo, but loading the driver's libcuda.so.1 (which the
# NVIDIA container runtime mounts into the container) needs the C library's
# dynamic loader, so it runs on distroless/base instead of static:
#   docker build -t streamguard:cuda --build-arg BUILD_TAGS=cuda \
#       --build-arg RUNTIME_BASE=gcr.io/distroless/base-debian12:nonroot .
# The driver compiles the kernels' PTX at the first load and keeps the result
# in its JIT cache; with a read-only root, give it a writable one, or every
# start compiles again:
#   docker run --rm --read-only --gpus all -e CUDA_CACHE_PATH=/cache/nv \
#       -p 8080:8080 -v sg-cache:/cache streamguard:cuda serve --device cuda ...

ARG GO_VERSION=1.26
ARG BUILD_TAGS=
ARG RUNTIME_BASE=gcr.io/distroless/static-debian12:nonroot

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
# No cgo, paths trimmed; static unless BUILD_TAGS=cuda.
ARG BUILD_TAGS
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -tags "${BUILD_TAGS}" -ldflags="-s -w" \
        -o /out/streamguard ./cmd/streamguard \
    && /out/streamguard --version
# The cache folder, owned by the runtime user, for a volume to be mounted on.
RUN mkdir -p /out/cache/huggingface

FROM ${RUNTIME_BASE}
COPY --from=build /out/streamguard /usr/local/bin/streamguard
COPY --from=build --chown=65532:65532 /out/cache /cache
# The hub cache (pull, and every --model given as ORG/NAME) lives under
# $HF_HOME/hub; HF_HUB_CACHE would name the hub folder itself.
ENV HF_HOME=/cache/huggingface
USER 65532:65532
VOLUME ["/cache"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=5m --retries=3 \
    CMD ["/usr/local/bin/streamguard", "healthcheck", "--quiet", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/streamguard"]
CMD ["serve", "--addr", "0.0.0.0:8080", "--model", "Qwen/Qwen3Guard-Stream-0.6B"]
