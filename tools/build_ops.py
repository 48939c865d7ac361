"""Builds herald_tf's native libraries with Bazel and copies them into herald_tf/lib.

Used by `make build` and by setup.py (`pip install .`). Runs tools/configure.py first so the
op library matches the TensorFlow of the running Python. Bazel runs with --batch so that no
server lingers after the build (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ("libherald_core.so", "_herald_ops.so")


def build() -> None:
    """Configures, builds both libraries and installs them into herald_tf/lib."""
    lib_dir = os.path.join(ROOT, "herald_tf", "lib")
    os.makedirs(lib_dir, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "configure.py")], check=True,
                   cwd=ROOT)
    bazel = shutil.which("bazel")
    if bazel is None:
        raise SystemExit("bazel not found: install Debian's bazel-bootstrap (`make setup` does).")
    jobs = os.environ.get("HERALD_BUILD_JOBS", str(os.cpu_count() or 2))
    subprocess.run([bazel, "--batch", "build", f"--jobs={jobs}"] + [f"//:{t}" for t in TARGETS],
                   check=True, cwd=ROOT)
    bin_dir = os.path.join(ROOT, "bazel-bin")
    for target in TARGETS:
        dst = os.path.join(lib_dir, target)
        # Copy beside, then rename: processes that already mapped the old library keep it,
        # and a process starting now sees either the old or the new file, never none.
        tmp = dst + ".tmp"
        # copyfile, not copy2: the installed file must be newer than the sources for make,
        # also when Bazel had nothing to rebuild and its output kept an older time
        shutil.copyfile(os.path.join(bin_dir, target), tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
    print(f"installed {', '.join(TARGETS)} into {lib_dir}")


if __name__ == "__main__":
    build()
