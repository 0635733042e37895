#!/usr/bin/env bash
# Run a command with PyTorch's AVX2 kernels on a newer x86 CPU, and dlbook told the CPU is AVX2-only:
#   bash tools/as_avx2.sh bash tools/run_chapter.sh full notebooks/12_quantization.ipynb
# ATen (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA) and FBGEMM, which runs
# quantize_dynamic's int8 products (FBGEMM_ENABLE_INSTRUCTIONS), each cap their instruction set at
# AVX2, so no AVX-512, VNNI, bf16 or AMX kernel runs. This checks a chapter's AVX2 code path and
# gives AVX2-kernel timings; the cache sizes and clock of the real CPU still differ from an
# AVX2-only machine's, so a bar for the cpu-avx2 class is set from real AVX2 machines as well.
set -euo pipefail
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2
export DLBOOK_CPU_FEATURES=avx2
exec "$@"
