"""The deterministic row initializer: a pure function of (seed, key, column), everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from reference import uniform_row

from herald_tf import InitializerConfig, _core, ops
from herald_tf.keras.export import initial_rows

KEYS = np.array([0, 1, -1, 2**62 + 12345, -(2**63), 26 << 32 | 0xDEADBEEF], np.int64)


def test_uniform_rows_equal_the_documented_formula_bit_for_bit() -> None:
    rows = _core.init_rows(InitializerConfig("uniform", -0.05, 0.05), 42, KEYS, 9)
    for key, row in zip(KEYS, rows):
        np.testing.assert_array_equal(row, uniform_row(42, int(key), 9, -0.05, 0.05))
    assert rows.min() >= -0.05 and rows.max() < 0.05


def test_op_and_ctypes_core_give_the_same_rows() -> None:
    for config in (InitializerConfig("uniform", -1, 2), InitializerConfig("normal", 0.5, 2.0)):
        a = ops.init_rows(KEYS, 17, 2**64 - 3, config).numpy()
        b = _core.init_rows(config, 2**64 - 3, KEYS, 17)
        np.testing.assert_array_equal(a, b)


def test_stock_tensorflow_recomputes_uniform_rows_exactly() -> None:
    config = InitializerConfig("uniform", -0.05, 0.05)
    np.testing.assert_array_equal(initial_rows(tf.constant(KEYS), 33, 7, config).numpy(),
                                  _core.init_rows(config, 7, KEYS, 33))


def test_stock_tensorflow_recomputes_normal_rows_within_ulps() -> None:
    config = InitializerConfig("normal", 0.0, 0.01)
    ours = _core.init_rows(config, 7, KEYS, 33)
    # normal rows depend on the platform's logf/cosf (kernels/core/initializer.h)
    np.testing.assert_array_max_ulp(initial_rows(tf.constant(KEYS), 33, 7, config).numpy(), ours,
                                    maxulp=4)


def test_normal_rows_have_the_requested_moments() -> None:
    rows = _core.init_rows(InitializerConfig("normal", 1.0, 2.0), 3, np.arange(20000), 16)
    assert abs(rows.mean() - 1.0) < 0.02 and abs(rows.std() - 2.0) < 0.02


def test_seed_and_key_change_the_row() -> None:
    config = InitializerConfig()
    a = _core.init_rows(config, 1, np.array([5]), 8)
    assert not np.array_equal(a, _core.init_rows(config, 2, np.array([5]), 8))
    assert not np.array_equal(a, _core.init_rows(config, 1, np.array([6]), 8))


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_two_processes_create_identical_rows(kind: str) -> None:
    code = (
        "import json, numpy as np\n"
        "from herald_tf import InitializerConfig, _core\n"
        f"r = _core.init_rows(InitializerConfig({kind!r}), 99, np.arange(-50, 50), 12)\n"
        "print(json.dumps(r.view(np.uint32).tolist()))\n"
    )
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert outs[0] == outs[1]
    here = _core.init_rows(InitializerConfig(kind), 99, np.arange(-50, 50), 12)
    assert json.loads(outs[0]) == here.view(np.uint32).tolist()
