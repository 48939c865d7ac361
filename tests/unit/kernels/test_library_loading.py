"""Loading the native libraries: a missing or mismatched library fails with what to rebuild."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from herald_tf import env

LOAD_OPS = "from herald_tf import ops; ops.load_ops()"
LOAD_CORE = "from herald_tf import _core; _core.load_core()"


def _run(code: str, lib_dir: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **{env.LIB_DIR_VAR: lib_dir})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ)


def test_missing_op_library_says_how_to_build_it(tmp_path) -> None:
    out = _run(LOAD_OPS, str(tmp_path))
    assert out.returncode != 0
    assert "op library is missing" in out.stderr and "make build" in out.stderr


def test_missing_core_library_says_how_to_build_it(tmp_path) -> None:
    out = _run(LOAD_CORE, str(tmp_path))
    assert "native library is missing" in out.stderr and "make build" in out.stderr


def test_library_built_for_another_tensorflow_is_refused(tmp_path) -> None:
    for name in ("_herald_ops.so", "libherald_core.so"):
        shutil.copy(os.path.join(env.lib_dir(), name), tmp_path / name)
    (tmp_path / "BUILT_FOR_TF").write_text("2.20.0\n")
    out = _run(LOAD_OPS, str(tmp_path))
    assert out.returncode != 0
    assert "built for TensorFlow 2.20.0" in out.stderr and "rebuild" in out.stderr


def test_importing_herald_tf_loads_neither_tensorflow_nor_a_library() -> None:
    code = ("import sys, herald_tf, herald_tf.scheduler, herald_tf.ps.store\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "assert 'herald' not in open('/proc/self/maps').read(), 'library loaded'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
