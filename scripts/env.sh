# Sourced by the scripts that train or evaluate models (tests, demo, experiments): settings a process must
# have in its environment before it starts (Ray workers inherit them from the process that starts Ray).
#
# glibc hands every freed block over 32 MB (a training step's logits) back to the OS, so each step
# page-faults its buffers in again: on a 2-core VM that is half of a tiny-llama step and a quarter of a
# SmolLM2 one (bench/training_step_bench.py). tcmalloc keeps such blocks for reuse and returns memory
# gradually; it is preloaded where installed (Debian: libtcmalloc-minimal4, which scripts/install.sh adds when
# it runs as root), else glibc's allocator stays (SAFE_FEDLLM_GLIBC_MALLOC=1 keeps it anyway). Telling glibc
# itself to keep freed memory (MALLOC_MMAP_MAX_=0) was as fast but let every process keep its peak: the test
# suite's two lanes then ran the machine out of memory.
tcmalloc=$( (ldconfig -p 2>/dev/null || true) | awk '/libtcmalloc_minimal\.so\.4 / && !n++ {print $NF}') || true
if [ -n "$tcmalloc" ] && [ -z "${SAFE_FEDLLM_GLIBC_MALLOC:-}" ]; then
    export LD_PRELOAD="$tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}"
fi
export TOKENIZERS_PARALLELISM=false
