#!/usr/bin/env bash
# Runs one command with a candidate alignment adapter in the shipped adapter's place (#28: item 2 and 3's
# measurements on a candidate base before it is shipped). The shipped files are restored on exit, also on
# failure or Ctrl-C. Caches keyed by the base's fingerprint keep the candidate's results apart. While it runs
# the work tree holds the candidate's files: add files to git by path, not with `git add -A`.
#   bash scripts/experiments/with_candidate_base.sh runs/align_robust_instr_r2 python scripts/experiments/audit_rounds.py ...
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -lt 2 || ! -f "$1/adapter_model.safetensors" ]]; then
    echo "usage: $0 ADAPTER_DIR COMMAND... (ADAPTER_DIR holds adapter_model.safetensors)" >&2
    exit 2
fi
adapter=$1
shift
. .venv/bin/activate
. scripts/env.sh
shipped=shared/model_zoo/artifacts/alignment/smollm2-135m
files=(adapter_config.json adapter_model.safetensors alignment_report.json)
backup=$(mktemp -d)
for f in "${files[@]}"; do cp "$shipped/$f" "$backup/"; done
trap 'for f in "${files[@]}"; do cp "$backup/$f" "$shipped/"; done; rm -rf "$backup"' EXIT
for f in "${files[@]}"; do cp "$adapter/$f" "$shipped/"; done
"$@"
