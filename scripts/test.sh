#!/usr/bin/env bash
# The test suite: install, lint, type-check, then unit and integration tests (tiny-llama, real Ray, real PEFT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
. scripts/env.sh
# PASSIVE: an OpenMP thread waiting at a barrier sleeps instead of spinning, leaving the core to the other lane.
export RAY_DEDUP_LOGS=0 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
lint() {
    ruff check .
    ruff format --check .
    # Types of shared/, probes/, services/, research/ ([tool.mypy] in pyproject.toml: pydantic plugin).
    mypy
}
if [ $# -gt 0 ]; then  # a selection: lint, then the selection as given
    lint
    exec python -m pytest -q --durations=15 "$@"
fi
# Two lanes of about equal length: the experiments' --quick runs and the REST federation (CPU-bound modules
# with their own Ray sessions and participant processes; they start first, beside the lint) and the rest of
# the suite, which waits on servers and processes much of the time. A failure in the main lane stops the
# other at once (fast tests first: tests/conftest.py).
LANE=(tests/integration/test_experiments_quick.py tests/integration/test_federation_rest.py)
IGNORE=("${LANE[@]/#/--ignore=}")
lane_log=$(mktemp)
setsid python -m pytest -q -p no:cacheprovider --durations=5 "${LANE[@]}" >"$lane_log" 2>&1 &
lane=$!  # its own process group, with the Ray processes it starts: stopped together
trap 'kill -- -"$lane" 2>/dev/null || true; rm -f "$lane_log"' EXIT
lint
status=0
python -m pytest -q --durations=15 "${IGNORE[@]}" || status=$?
# The precision-sensitive tests (marker `precision`) once more in the compute dtype this run did not use:
# float32 where `auto` chose bf16 (CPUs with AMX), else bf16 (emulated, slow, but tiny-llama is tiny).
if [ $status -eq 0 ]; then
    other=$(python -c 'import torch; from shared.config import runtime_settings as r; from shared.precision import resolve_compute_dtype as d; print("float32" if d(r().compute_dtype) == torch.bfloat16 else "bfloat16")')
    echo "precision tests again with SAFE_FEDLLM_COMPUTE_DTYPE=$other"
    SAFE_FEDLLM_COMPUTE_DTYPE=$other python -m pytest -q -m precision "${IGNORE[@]}" || status=$?
fi
if [ $status -ne 0 ]; then  # the other lane's outcome cannot change the verdict
    echo "stopping the second lane (${LANE[*]})"
    exit $status
fi
wait "$lane" || status=$?
echo "--- the second lane: ${LANE[*]} ---"
cat "$lane_log"
exit $status
