#!/usr/bin/env bash
# #28 on a lent GPU, calls 1 and 2 (run THERE, in the shipped repo root): keep part N of the GGUF in
# /root/parts, which outlives the call on the same warm machine. Call 1 (N=1) also installs the wheels into
# /tmp/site and checks that the alignment code imports with them: if that fails, give the machine back.
set -euo pipefail
N=${1:?usage: stage.sh PART}
mkdir -p /root/parts
if [ "$N" != 1 ] && { [ ! -f /root/parts/gguf.part1 ] || [ ! -f /tmp/site/.safe-fedllm-wheels ]; }; then
  echo "FRESH MACHINE: call 1's part and wheels are gone (the machine went cold); start again at call 1" >&2
  exit 3
fi
cp ".gpu/p$N"/gguf.* /root/parts/
ls -l /root/parts
if [ "$N" = 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/p1/whl/*.whl
  touch /tmp/site/.safe-fedllm-wheels
  PYTHONPATH=/tmp/site:$PWD python3 - <<'PY'
import importlib.metadata as md
import torch
import shared.model_zoo.alignment, shared.model_zoo.registry, shared.data.pools  # noqa: F401
for name in ("transformers", "peft", "pydantic", "pydantic-settings", "gguf", "huggingface-hub", "tokenizers",
             "accelerate", "regex", "safetensors", "typing-extensions"):
    print(name, md.version(name))
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("IMPORTS OK")
PY
fi
