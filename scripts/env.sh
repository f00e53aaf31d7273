# Sourced by the scripts that train or evaluate models (tests, demo, experiments): settings a process must
# have in its environment before it starts (Ray workers inherit them from the process that starts Ray).
#
# glibc hands every freed block over 32 MB (a training step's logits) back to the OS, so each step
# page-faults its buffers in again: on a 2-core VM that is a third of a tiny-llama step and a tenth of a
# SmolLM2 one (bench/training_step_bench.py). Serving every block from the heap and keeping up to 256 MB of
# freed memory there for reuse avoids it. A larger threshold is barely faster and lets every process hold its
# peak memory: the test suite's two lanes then ran the machine out of memory.
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-268435456}"
export TOKENIZERS_PARALLELISM=false
