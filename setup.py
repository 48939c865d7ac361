"""Packaging of herald_tf: `pip install .` builds the op library through Bazel (tools/build_ops.py)
and ships it inside the package (herald_tf/lib)."""

from __future__ import annotations

import os
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


class BuildWithOps(build_py):
    """Runs the Bazel build of the native libraries before collecting package files."""

    def run(self) -> None:
        # An editable install (`make setup`) uses the libraries `make build` put in place.
        if not getattr(self, "editable_mode", False):
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_ops.py")],
                           check=True)
        super().run()


setup(
    name="herald_tf",
    version="0.1.0",
    description="Distributed training of recommendation models with embedding scheduling "
    "(Herald) as a TensorFlow plugin",
    python_requires=">=3.11",
    packages=find_packages(include=["herald_tf", "herald_tf.*"]),
    package_data={"herald_tf": ["lib/*.so", "lib/BUILT_FOR_TF", "transport/*.proto"]},
    install_requires=[
        "tensorflow-cpu==2.21.0",
        "numpy>=1.26",
        "grpcio>=1.85.1,<1.86",
        "protobuf",
        "pyyaml>=6",
        "absl-py>=2",
    ],
    extras_require={"test": ["pytest>=8", "hypothesis>=6"]},
    cmdclass={"build_py": BuildWithOps},
    entry_points={"console_scripts": [
        "herald-run = herald_tf.launch.cli:main",
        "herald-ps = herald_tf.ps.server_main:main",
    ]},
    zip_safe=False,
)
