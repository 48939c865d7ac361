#!/usr/bin/env bash
# Builds Horovod 0.28.1 from its source package into the project's venv (DESIGN §9).
#
# horovod.tensorflow against TensorFlow 2.21 with Gloo, no MPI, no PyTorch/MXNet. The sdist needs
# one patch: xla_mpi_ops.cc uses XLA GPU headers whenever TF >= 2.6, which the CPU wheel lacks, so
# that block is compiled only when Horovod is built with GPU support. Idempotent: exits at once
# when the venv already imports a Gloo-enabled horovod.tensorflow of this version.
#
# Usage: tools/install_horovod.sh [VENV]   (default: .venv of the repository root)
# Environment: HOROVOD_BUILD_JOBS (default: nproc) limits the compile's parallelism.
set -euo pipefail

HOROVOD_VERSION=0.28.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
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

if installed_ok; then
  echo "horovod $HOROVOD_VERSION (TensorFlow, Gloo) already installed in $VENV"
  exit 0
fi

start=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/herald-horovod.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Build tools first: Horovod's CMake files do not work with CMake 4; --no-build-isolation means
# the build sees the venv's TensorFlow (the one it must link against) and this cmake.
"$PY" -m pip install -q "cmake<4" packaging psutil cloudpickle pyyaml

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

export PATH="$VENV/bin:$PATH"
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
export MAKEFLAGS="-j${HOROVOD_BUILD_JOBS:-$(nproc)}"
"$PY" -m pip install -q --no-build-isolation --no-deps "$src"

if ! installed_ok; then
  echo "install_horovod.sh: horovod built but horovod.tensorflow does not import with Gloo." >&2
  exit 1
fi
echo "horovod $HOROVOD_VERSION (TensorFlow, Gloo) installed in $VENV in $(( $(date +%s) - start )) s"
