#!/usr/bin/env bash
# Builds the TF op library with GPU kernels when nvcc is present (a `make gpu-ops` style step):
#   <out>/_herald_ops.so = ops/*.cc + kernels/tf/*.cc (CPU adapters and the *_gpu.cc ones)
#                          + kernels/{cpu,ps,scheduler}/*.cc + kernels/cuda/*.cu (nvcc, sm_90)
# the same ops as Bazel's //:_herald_ops.so plus DEVICE_GPU kernels, and herald_cuda_built() = 1.
# On the CPU machines (tensorflow-cpu, nvcc, no GPU) this is compile-and-link only: nothing here
# runs a GPU kernel under TensorFlow until a TensorFlow GPU host is available (DESIGN §8).
#   PYTHON=.venv/bin/python NVCC=/usr/local/cuda/bin/nvcc JOBS=2 kernels/cuda/build_tf_gpu_ops.sh [out]
# Without nvcc it prints why and exits 0 (CPU-only builds are Bazel's job).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT_DIR=${1:-$ROOT/build/tf_gpu}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${JOBS:-2}
CXX=${CXX:-g++}
if [ ! -x "$NVCC" ]; then
  echo "nvcc not found (set NVCC): GPU kernels not built; the CPU op library is unaffected."
  exit 0
fi
if [ -z "${CUDA_HOME:-}" ]; then  # nvcc may be a wrapper script outside the toolkit
  for d in "$(dirname "$(readlink -f "$NVCC")")/.." /usr/local/cuda; do
    if [ -f "$d/include/cuda_runtime_api.h" ]; then CUDA_HOME=$(cd "$d" && pwd); break; fi
  done
fi
if [ ! -f "${CUDA_HOME:-}/include/cuda_runtime_api.h" ]; then
  echo "CUDA headers not found: set CUDA_HOME to the toolkit (with include/ and lib64/)." >&2
  exit 1
fi
read -r -a TF_CFLAGS <<<"$("$PY" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_compile_flags()))' 2>/dev/null)"
read -r -a TF_LFLAGS <<<"$("$PY" -c 'import tensorflow as tf; print(" ".join(tf.sysconfig.get_link_flags()))' 2>/dev/null)"
TF_VERSION=$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)
TF_LIB_DIR=$("$PY" -c 'import tensorflow as tf; print(tf.sysconfig.get_lib())' 2>/dev/null)

# tensorflow-cpu ships no third_party/gpus/cuda/include (DESIGN §9): point it at CUDA's headers.
mkdir -p "$OUT_DIR/include/third_party/gpus/cuda" "$OUT_DIR/obj"
ln -sfn "$CUDA_HOME/include" "$OUT_DIR/include/third_party/gpus/cuda/include"

# 1. The CUDA core (the same objects as benchmarks/gpu/build.sh).
JOBS=$JOBS NVCC=$NVCC "$ROOT/benchmarks/gpu/build.sh" "$OUT_DIR/cuda" >/dev/null

# 2. The TF adapters, ops and CPU core with the host compiler (flags as .bazelrc / tools/herald.bzl).
CXXFLAGS=(-std=c++17 -O3 -fPIC -fno-math-errno -ffp-contract=off -fvisibility=hidden
  -DGOOGLE_CUDA=1 -DHERALD_WITH_CUDA=1 "-DHERALD_TF_VERSION_STRING=\"$TF_VERSION\""
  -DEIGEN_MAX_ALIGN_BYTES=64 -D_GLIBCXX_USE_CXX11_ABI=1 -Wno-deprecated-declarations
  -Wno-interference-size -I"$ROOT" -I"$OUT_DIR/include" -I"$CUDA_HOME/include" "${TF_CFLAGS[@]}")
CORE_FLAGS=(-std=c++17 -O3 -fPIC -fno-math-errno -ffp-contract=off -DHERALD_WITH_CUDA=1 -I"$ROOT")
objs=()
running=0
compile() {  # src flags...
  local src=$1; shift
  local obj="$OUT_DIR/obj/$(echo "${src#"$ROOT"/}" | tr '/' '_').o"
  objs+=("$obj")
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$ROOT/kernels" "$ROOT/ops" -name '*.h' -newer "$obj" 2>/dev/null | head -1)" ]; then
    "$CXX" "$@" -c "$src" -o "$obj" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  fi
}
for src in "$ROOT"/ops/*.cc "$ROOT"/kernels/tf/*.cc; do compile "$src" "${CXXFLAGS[@]}"; done
for src in "$ROOT"/kernels/cpu/*.cc "$ROOT"/kernels/ps/*.cc "$ROOT"/kernels/scheduler/*.cc; do
  [ -f "$src" ] && compile "$src" "${CORE_FLAGS[@]}" -fvisibility=default
done
while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done

# 3. One library: CPU + GPU kernels, cudart linked as DESIGN §9 measured.
"$CXX" -shared -o "$OUT_DIR/_herald_ops.so" "${objs[@]}" "$OUT_DIR"/cuda/*.o \
  "${TF_LFLAGS[@]}" -L"$CUDA_HOME/lib64" -Xlinker --no-as-needed -lcudart \
  -Wl,-rpath,"$TF_LIB_DIR" -Wl,-soname,_herald_ops.so
echo "built $OUT_DIR/_herald_ops.so (CPU + GPU kernels, TF $TF_VERSION, $("$NVCC" --version | tail -1))"
