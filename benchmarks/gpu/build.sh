#!/usr/bin/env bash
# Builds the framework-free CUDA core (kernels/cuda/*.cu) into one shared library for the GPU
# harness: build/gpu/libherald_cuda.so (or $1/libherald_cuda.so). No TensorFlow needed.
#   NVCC=/path/to/nvcc HERALD_CUDA_ARCH=sm_90 JOBS=4 HERALD_NVCC_FLAGS=... benchmarks/gpu/build.sh [out_dir]
# Flags: -O3; -fmad=false so that float results do not depend on FMA contraction (the CPU core is
# built with -ffp-contract=off; DESIGN §4a), which makes the optimizer and in-bag sums follow the
# CPU kernel's float operations.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT_DIR=${1:-$ROOT/build/gpu}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCH=${HERALD_CUDA_ARCH:-sm_90}
JOBS=${JOBS:-1}
# HERALD_NVCC_FLAGS: extra flags, e.g. tuning variants (-DHERALD_POOL_UNROLL=16).
FLAGS=(-arch="$ARCH" -O3 -std=c++17 -fmad=false -Xcompiler -fPIC,-Wall -I"$ROOT" ${HERALD_NVCC_FLAGS:-})
mkdir -p "$OUT_DIR"
objs=()
running=0
for src in "$ROOT"/kernels/cuda/*.cu; do
  obj="$OUT_DIR/$(basename "${src%.cu}").o"
  objs+=("$obj")
  "$NVCC" "${FLAGS[@]}" -c "$src" -o "$obj" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done
"$NVCC" -arch="$ARCH" -shared "${objs[@]}" -o "$OUT_DIR/libherald_cuda.so"
echo "built $OUT_DIR/libherald_cuda.so with $("$NVCC" --version | tail -1)"
