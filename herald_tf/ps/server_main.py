"""``herald-ps``: runs one parameter-server shard as a process (no TensorFlow imported).

    herald-ps --port 0 --token-file /run/herald/token --checkpoint-dir /ckpt \\
              --shard-index 0 --num-shards 2 [--num-workers 4] [--restore latest] \\
              [--port-file /tmp/ps0.port] [--address 127.0.0.1] [--tls-cert C --tls-key K] \\
              [--data-port 0 | --no-data-plane]

The token comes from ``--token``, ``--token-file`` or ``$HERALD_PS_TOKEN`` (a file or the
environment keeps it out of ``ps`` listings). With ``--port 0`` the OS picks a port; the bound
port is printed (``herald-ps listening on ADDRESS:PORT``) and, with ``--port-file``, written to
that file atomically. ``--parent-pid`` makes the process die with that parent (Linux
PR_SET_PDEATHSIG), as tests and launchers want. SIGTERM/SIGINT stop it gracefully. Pull and
push are also served over a TCP data plane (same address, token and TLS; ``--data-port``) for
the ``grpc+tcp`` transport; ``--no-data-plane`` turns it off.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Sequence

from herald_tf import env


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags of herald-ps."""
    p = argparse.ArgumentParser(prog="herald-ps", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--port-file", help="write the bound port to this file")
    p.add_argument("--token", help="cluster token (prefer --token-file or $HERALD_PS_TOKEN)")
    p.add_argument("--token-file", help="file holding the cluster token")
    p.add_argument("--checkpoint-dir", help="directory of checkpoints (shared by all shards)")
    p.add_argument("--restore", default="none",
                   help="'none', 'latest' or a step number to restore from --checkpoint-dir")
    p.add_argument("--shard-index", type=int, default=0)
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=None,
                   help="workers pushing each step (default: from the first connect)")
    p.add_argument("--push-window", type=int, default=8,
                   help="how many steps ahead of the applied one a push may be")
    p.add_argument("--wait-s", type=float, default=60.0,
                   help="default deadline of server-side waits, seconds")
    p.add_argument("--threads", type=int, default=64,
                   help="RPC handler threads; a pull waiting for min_versions holds one, so "
                        "keep it above workers x waiting pulls per worker")
    p.add_argument("--data-port", type=int, default=0,
                   help="port of the TCP data plane for pull and push (transport 'grpc+tcp'); "
                        "0 picks a free one, clients learn it over gRPC")
    p.add_argument("--no-data-plane", action="store_true",
                   help="serve no TCP data plane (only the 'grpc' transport works)")
    p.add_argument("--tls-cert", help="PEM certificate chain (enables TLS with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit when this parent process dies")
    return p


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    if args.token_file:
        with open(args.token_file) as f:
            return f.read().strip()
    token = env.ps_token()
    if not token:
        raise SystemExit("herald-ps: expected a cluster token: pass --token, --token-file or set "
                         f"${env.PS_TOKEN_VAR}")
    return token


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``herald-ps``: serve one shard until SIGTERM/SIGINT."""
    args = build_parser().parse_args(argv)
    if args.parent_pid is not None:
        _die_with_parent(args.parent_pid)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("herald-ps: expected both --tls-cert and --tls-key, or neither")
    token = _token(args)
    from herald_tf.ps import checkpoint  # noqa: PLC0415 (keep --help fast)
    from herald_tf.ps.store import ShardStore  # noqa: PLC0415
    from herald_tf.transport.grpc_server import serve, write_port_file  # noqa: PLC0415

    store = ShardStore(args.shard_index, args.num_shards, args.num_workers,
                       push_window=args.push_window, wait_s=args.wait_s)
    if args.restore != "none":
        if not args.checkpoint_dir:
            raise SystemExit("herald-ps: --restore needs --checkpoint-dir")
        step = None if args.restore == "latest" else int(args.restore)
        restored = checkpoint.restore(store, args.checkpoint_dir, step)
        print(f"herald-ps restored step {restored} from {args.checkpoint_dir}", flush=True)
    server, port = serve(store, token, args.address, args.port, args.checkpoint_dir,
                         args.tls_cert, args.tls_key, max_threads=args.threads,
                         data_port=None if args.no_data_plane else args.data_port)
    if args.port_file:
        write_port_file(args.port_file, port)
    data = f", data plane on port {server.data_port}" if server.data_port is not None else ""
    print(f"herald-ps listening on {args.address}:{port} (shard {args.shard_index} of "
          f"{args.num_shards}{data})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2.0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
