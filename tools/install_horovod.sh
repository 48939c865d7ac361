#!/usr/bin/env bash
# Builds Horovod 0.28.1 from its source package into the project's venv (DESIGN §9).
#
# horovod.tensorflow against the venv's TensorFlow with Gloo, no MPI, no PyTorch/MXNet. The sdist
# needs one patch: xla_mpi_ops.cc uses XLA GPU headers whenever TF >= 2.6, which the CPU wheel
# lacks, so that block is compiled only when Horovod is built with GPU support.
#
# Idempotent: exits at once when the venv already imports a Gloo-enabled horovod.tensorflow of
# this version. The built wheel is kept in a cache directory keyed by the TensorFlow version
# (an op library is tied to the TF it was built with), so a fresh venv installs it in seconds.
#
# Usage: tools/install_horovod.sh [--force] [--cache DIR] [VENV]
#   --force      reinstall even if the venv already has it (the cached wheel is still used)
#   --cache DIR  wheel cache (default: ${XDG_CACHE_HOME:-~/.cache}/herald_tf/wheels)
#   VENV         the venv to install into (default: .venv of the repository root)
# Environment: HOROVOD_BUILD_JOBS (default: nproc) limits the compile's parallelism.
set -euo pipefail

HOROVOD_VERSION=0.28.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
force=0
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/herald_tf/wheels"
VENV="$ROOT/.venv"
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --cache) cache_root="$2"; shift ;;
    -*) echo "install_horovod.sh: unknown option $1" >&2; exit 2 ;;
    *) VENV="$1" ;;
  esac
  shift
done
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  echo "install_horovod.sh: no Python at $PY; run 'make setup' first." >&2
  exit 1
fi

installed_ok() {
  TF_CPP_MIN_LOG_LEVEL=3 "$PY" - "$HOROVOD_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import horovod
import horovod.tensorflow as hvd
sys.exit(0 if horovod.__version__ == sys.argv[1] and hvd.gloo_built() else 1)
EOF
}

if [ "$force" = 0 ] && installed_ok; then
  echo "horovod $HOROVOD_VERSION (TensorFlow, Gloo) already installed in $VENV"
  exit 0
fi

start=$(date +%s)
tf_version="$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))' 2>/dev/null \
  || TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
py_tag="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
cache="$cache_root/tf-$tf_version-$py_tag"
mkdir -p "$cache"

# Horovod's runtime dependencies, and cmake < 4 for its build (its CMake files predate CMake 4).
"$PY" -m pip install -q "cmake<4" packaging psutil cloudpickle pyyaml

wheel="$(ls "$cache"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$wheel" ]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/herald-horovod.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "horovod==$HOROVOD_VERSION"
  tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
  src="$work/horovod-$HOROVOD_VERSION"

  patched="$src/horovod/tensorflow/xla_mpi_ops.cc"
  sed -i 's/^#if TENSORFLOW_VERSION >= 2006000000$/#if TENSORFLOW_VERSION >= 2006000000 \&\& HAVE_GPU/' \
    "$patched"
  if ! grep -q '^#if TENSORFLOW_VERSION >= 2006000000 && HAVE_GPU$' "$patched"; then
    echo "install_horovod.sh: the xla_mpi_ops.cc patch did not apply; the sdist changed?" >&2
    exit 1
  fi

  # --no-build-isolation: the build must see the venv's TensorFlow (the one it links against).
  export PATH="$VENV/bin:$PATH"
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
  export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  export MAKEFLAGS="-j${HOROVOD_BUILD_JOBS:-$(nproc)}"
  "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/wheel" "$src"
  mv "$work"/wheel/horovod-"$HOROVOD_VERSION"-*.whl "$cache"/
  wheel="$(ls "$cache"/horovod-"$HOROVOD_VERSION"-*.whl | head -n 1)"
  echo "built $(basename "$wheel") in $(( $(date +%s) - start )) s"
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$wheel"

if ! installed_ok; then
  echo "install_horovod.sh: horovod installed but horovod.tensorflow does not import with Gloo." \
    "Delete $cache and run again to rebuild." >&2
  exit 1
fi
echo "horovod $HOROVOD_VERSION (TensorFlow, Gloo) installed in $VENV in $(( $(date +%s) - start )) s"
