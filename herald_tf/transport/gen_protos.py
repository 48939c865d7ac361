"""Regenerates the committed gRPC stubs from herald_ps.proto with the pinned grpcio-tools.

Run ``python -m herald_tf.transport.gen_protos`` after editing the .proto. The stubs are
committed (generated with grpcio-tools 1.85.1, protoc 35.1) so installing herald_tf needs no
code generation; the import in the generated service module is made package-relative.
"""

from __future__ import annotations

import os
import sys

PINNED_GRPCIO_TOOLS = "1.85.1"


def main() -> int:
    """Runs protoc from grpc_tools on herald_ps.proto next to this file."""
    import grpc_tools  # noqa: PLC0415
    from grpc_tools import protoc  # noqa: PLC0415 (build-time only)

    here = os.path.dirname(os.path.abspath(__file__))
    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version  # noqa: PLC0415

        version = dist_version("grpcio-tools")
    if version != PINNED_GRPCIO_TOOLS:
        print(f"warning: grpcio-tools {version}, stubs are pinned to {PINNED_GRPCIO_TOOLS}",
              file=sys.stderr)
    rc = protoc.main(["protoc", f"-I{here}", f"--python_out={here}", f"--grpc_python_out={here}",
                      os.path.join(here, "herald_ps.proto")])
    if rc != 0:
        return rc
    for name in ("herald_ps_pb2.py", "herald_ps_pb2_grpc.py"):
        path = os.path.join(here, name)
        with open(path) as f:
            text = f.read()
        text = text.replace("import herald_ps_pb2 as",
                            "from herald_tf.transport import herald_ps_pb2 as")
        with open(path, "w") as f:
            f.write("# ruff: noqa\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
