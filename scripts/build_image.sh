#!/usr/bin/env bash
# Optional, not in CI (tens of minutes, ~15 GB of disk with vfs): builds the image from the Dockerfile without a
# Docker daemon, then smoke-tests it.
#   - base: a Debian image made with mmdebstrap (python3 + venv), imported into buildah;
#   - build: Debian's buildah, vfs storage, chroot isolation (works as root inside an unprivileged container);
#   - smoke test (`buildah run`, host network): the aggregator answers /healthz against a real redis-server, and
#     the probe service (Ray Serve in the container) scores an adapter.
# Usage: sudo bash scripts/build_image.sh    (TAG, WORK, SUITE, WHEELS, TORCH_INDEX_URL, CA_BUNDLE, PIP_CONF)
# WHEELS=/dir mounts a local wheel directory for pip (PIP_FIND_LINKS), e.g. with the torch CPU wheel for machines
# that cannot reach the torch index; the package index stays in use for everything else (--extra-index-url).
# CA_BUNDLE=/path.pem (a bundle that includes a TLS-intercepting proxy's CA; it replaces pip's own) and
# PIP_CONF=/path/pip.conf (index mirrors, proxy) reach pip as build secrets, never as image layers.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${TAG:-localhost/safe-fedllm:dev}"
SUITE="${SUITE:-bookworm}"
BASE_TAG="localhost/safe-fedllm-base:${SUITE}"
WORK="${WORK:-/var/tmp/safe-fedllm-image}"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
START=$(date +%s)
step() { echo "[$(($(date +%s) - START)) s] $*"; }
mkdir -p "$WORK"

missing=()
for tool in buildah mmdebstrap redis-server curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "needs root to install: ${missing[*]}" >&2; exit 1; }
    step "apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q "${missing[@]}" >/dev/null
fi

if ! buildah inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
    step "base: mmdebstrap $SUITE (minbase + python3, python3-venv)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$WORK/base.tar"
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$WORK/base.tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --rm "$ctr" "$BASE_TAG" >/dev/null
    rm -f "$WORK/base.tar"
fi

step "build $TAG"
args=(--build-arg "BASE_IMAGE=$BASE_TAG" --layers=false -t "$TAG")
if [ -n "${WHEELS:-}" ]; then
    args+=(--volume "$(realpath "$WHEELS"):/wheels:ro" --build-arg PIP_FIND_LINKS=/wheels)
fi
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
fi
if [ -n "${CA_BUNDLE:-}" ]; then
    args+=(--secret "id=ca_bundle,src=$(realpath "$CA_BUNDLE")")
fi
if [ -n "${PIP_CONF:-}" ]; then
    args+=(--secret "id=pip_conf,src=$(realpath "$PIP_CONF")")
fi
buildah bud "${args[@]}" .
step "built: $(buildah inspect --type image --format '{{.Docker.Size}}' "$TAG" 2>/dev/null || echo '?') bytes"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
AGG_PORT=$(free_port)
PROBE_PORT=$(free_port)
PASSWORD=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
ctr=$(buildah from "$TAG")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    buildah rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "smoke: redis-server on 127.0.0.1:$REDIS_PORT (AOF), aggregator in the image on :$AGG_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --requirepass "$PASSWORD" --appendonly yes \
    --dir "$WORK" --save "" >"$WORK/redis.log" 2>&1 &
pids+=($!)
buildah run --network host \
    --env "SAFE_FEDLLM_REDIS_URL=redis://:$PASSWORD@127.0.0.1:$REDIS_PORT/0" \
    --env SAFE_FEDLLM_AGGREGATOR_DEFENSE=fedavg \
    "$ctr" -- safe-fedllm aggregator --host 127.0.0.1 --port "$AGG_PORT" >"$WORK/aggregator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
    curl -fsS "http://127.0.0.1:$AGG_PORT/healthz" >/dev/null 2>&1 && break
    sleep 2
done
step "aggregator /healthz: $(curl -fsS "http://127.0.0.1:$AGG_PORT/healthz")"

step "smoke: the probe service (Ray Serve) in the image scores an adapter"
buildah run --network host --env "PROBE_PORT=$PROBE_PORT" "$ctr" -- python - <<'EOF'
import os

from services.aggregator.server import BaseModelAccess
from services.probe_service.client import ProbeServiceClient
from services.probe_service.deployment import start_probe_service
from services.probe_service.settings import ProbeServiceSettings
from shared.config import LoraSettings

url = start_probe_service(ProbeServiceSettings(port=int(os.environ["PROBE_PORT"])))
init = BaseModelAccess("smollm2-135m", LoraSettings()).initial_adapter(None)
adapter = {key: value + 0.01 for key, value in init.items()}
with ProbeServiceClient(url) as client:
    result = client.score_adapter(adapter, base_model="smollm2-135m")
print(f"probe {result.probe_id}: p={result.probability:.3f} verdict={result.verdict}")
EOF
step "done: $TAG"
