"""Records where the pip TensorFlow lives for the Bazel build (run by `make build`).

Writes .configure.bazelrc (TF include dirs, the ABI define, and --override_repository for the
offline rules_cc/rules_java stand-ins) and links third_party/tensorflow_pip to the TF package.
Run it with the Python whose TensorFlow the op library must match.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import tensorflow as tf

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tf_dir = os.path.dirname(tf.__file__)
    link = os.path.join(root, "third_party", "tensorflow_pip")
    if os.path.islink(link) or os.path.exists(link):
        os.remove(link)
    os.symlink(tf_dir, link)
    lines = [
        f"# Written by tools/configure.py for TensorFlow {tf.__version__}; do not commit.",
        f"build --override_repository=rules_cc={root}/third_party/rules_cc",
        f"build --override_repository=rules_java={root}/third_party/rules_java",
        f"build --action_env=HERALD_TF_VERSION={tf.__version__}",
        f"build --copt=-DHERALD_TF_VERSION_STRING=\\\"{tf.__version__}\\\"",
    ]
    with open(os.path.join(root, ".configure.bazelrc"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(root, "herald_tf", "lib", "BUILT_FOR_TF"), "w") as f:
        f.write(tf.__version__ + "\n")
    print(f"configured for TensorFlow {tf.__version__} at {tf_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
