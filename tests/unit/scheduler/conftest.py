"""Scheduler test set-up: makes the C++ engine loadable (building it with g++ if needed)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

from herald_tf import env
from herald_tf.scheduler import _native

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="session")
def native_lib(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a library exporting the scheduler ABI: libherald_core.so if it has it, else one
    compiled here from kernels/scheduler/*.cc when that one is missing or older than the sources."""
    sources = sorted(glob.glob(os.path.join(ROOT, "kernels", "scheduler", "*")))
    if os.environ.get(_native.CORE_LIB_VAR):
        _native.load_library()
        return os.environ[_native.CORE_LIB_VAR]
    built = os.path.join(env.lib_dir(), "libherald_core.so")
    if _native.available() and os.path.getmtime(built) >= max(map(os.path.getmtime, sources)):
        return built
    if shutil.which("g++") is None:
        pytest.skip("no scheduler library and no g++ to build one")
    out = str(tmp_path_factory.mktemp("sched") / "libherald_sched.so")
    subprocess.run(
        ["g++", "-O2", "-std=c++17", "-ffp-contract=off", "-fPIC", "-shared", f"-I{ROOT}",
         *[x for x in sources if x.endswith(".cc")], "-o", out],
        check=True,
    )
    os.environ[_native.CORE_LIB_VAR] = out
    _native.load_library.cache_clear()
    _native.load_library()
    return out
