#!/usr/bin/env bash
# Regenerates requirements.lock, the exact versions scripts/install.sh installs (as pip constraints), so two
# fresh machines resolve the same way. torch is held to the 2.13.0 CPU wheel (the CUDA build's metadata would
# lock nvidia-* packages); the existing lock's pins are kept where they still satisfy pyproject.toml.
# Needs `uv` (dev extra); --upgrade re-resolves everything to the newest allowed versions.
set -euo pipefail
cd "$(dirname "$0")/.."
constraint="$(mktemp)"
trap 'rm -f "$constraint"' EXIT
echo "torch==2.13.0+cpu" >"$constraint"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)  # where this workplace keeps the CPU wheel
uv pip compile pyproject.toml --extra dev --extra experiments --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    "${find_links[@]}" -c "$constraint" \
    --no-header -o requirements.lock "$@"
