"""The TF GPU kernels (kernels/tf/*_gpu.cc over kernels/cuda/) compile, link and register.

`make gpu-ops` builds build/tf_gpu/_herald_ops.so with nvcc; this test loads it into the
CPU TensorFlow of this machine in a fresh process and checks that every herald op has a CPU and
a GPU kernel. No GPU kernel runs here: there is no GPU on these machines (README).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LIBRARY = os.path.join(os.path.dirname(__file__), "..", "..", "..", "build", "tf_gpu",
                       "_herald_ops.so")
OPS = ["Herald>Lookup", "Herald>LookupGrad", "Herald>SparseApply", "Herald>InitRows",
       "Herald>GatherRows", "Herald>ScatterRows"]

CHECK = """
import sys, tensorflow as tf
from tensorflow.python.framework import kernels
tf.load_op_library(sys.argv[1])
for op in sys.argv[2:]:
    devices = {k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel}
    assert {"CPU", "GPU"} <= devices, (op, devices)
print("ok")
"""


@pytest.mark.skipif(not os.path.exists(LIBRARY),
                    reason="build/tf_gpu/_herald_ops.so not built (make gpu-ops needs nvcc)")
def test_every_op_has_cpu_and_gpu_kernels() -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", CHECK, os.path.abspath(LIBRARY), *OPS],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
