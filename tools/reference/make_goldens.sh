#!/usr/bin/env bash
# Regenerates testdata/golden/tiny-{f32,bf16,awq}-seed1.json.gz and awq_pack.json.
# Run from the repository root. Needs Go and Debian's python3-numpy
# (apt-get install -y python3-numpy; it installs for /usr/bin/python3).
# Usage: tools/reference/make_goldens.sh [dtype ...]   (default: f32 bf16 awq)
set -euo pipefail
PY=/usr/bin/python3
SEED=1
PRESET=tiny
work=$(mktemp -d /tmp/sg-goldens.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/streamguard" ./cmd/streamguard
$PY tools/reference/awq_pack_vectors.py --out testdata/golden/awq_pack.json
for dt in "${@:-f32 bf16 awq}"; do
  for d in $dt; do
    gen="streamguard gen-model --preset $PRESET --dtype $d --seed $SEED --out MODEL_DIR"
    "$work/streamguard" gen-model --preset "$PRESET" --dtype "$d" --seed "$SEED" --out "$work/$d"
    $PY tools/reference/qwen3guard_ref.py --model "$work/$d" --ids-file testdata/golden/cases.json \
      --out "testdata/golden/$PRESET-$d-seed$SEED.json.gz" \
      --meta "preset=$PRESET" --meta "dtype=$d" --meta "seed=$SEED" --meta "generator=$gen" \
      --meta "reference_command=/usr/bin/python3 tools/reference/qwen3guard_ref.py --model MODEL_DIR --ids-file testdata/golden/cases.json --out testdata/golden/$PRESET-$d-seed$SEED.json.gz"
  done
done
ls -l testdata/golden
