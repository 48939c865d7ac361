"""``herald-run``: starts herald parameter servers and training workers from a cluster config.

    herald-run -c examples/config/dist.yml -- python examples/ctr/run_herald.py --model wdl_criteo
    herald-run -c tf_config.json -- python train.py        # TF_CONFIG-style spec in a file
    TF_CONFIG='{"cluster": ..., "task": ...}' herald-run -- python train.py   # one pod's task
    herald-run -c dist.yml --dry-run -- python train.py    # print the exact commands only

The seed's form without ``--`` (``herald-run -c dist.yml python3 train.py``) works too. A random
cluster token is made for a whole-cluster launch; in TF_CONFIG task mode every pod must share it
through ``$HERALD_TOKEN`` (e.g. a Kubernetes Secret) or ``--token-file``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
from collections.abc import Sequence

from herald_tf import env
from herald_tf.launch.config import ClusterConfigError, load_cluster
from herald_tf.launch.plan import LaunchOptions, build_process_list, check_launch
from herald_tf.launch.remote import describe
from herald_tf.launch.runner import run_cluster

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags of herald-run."""
    p = argparse.ArgumentParser(
        prog="herald-run", description=__doc__.split("\n\n")[0].replace("``", ""),
        usage="herald-run [-c CLUSTER.yml] [options] -- COMMAND [ARGS ...]")
    p.add_argument("-c", "--config", help="dist.yml or a TF_CONFIG-style JSON/YAML file "
                   "(default: $TF_CONFIG)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the commands (ssh for remote hosts) and exit")
    p.add_argument("--checkpoint-dir", help="--checkpoint-dir of every parameter server")
    p.add_argument("--ps-args", default="", help="extra flags for every PS, one shell string")
    p.add_argument("--ps-command", default=None,
                   help="PS program instead of 'PYTHON -m herald_tf.ps.server_main' "
                        "(one shell string; the PS flags are appended)")
    p.add_argument("--python", default=sys.executable, help="interpreter of local PS processes")
    p.add_argument("--remote-python", default="python3",
                   help="interpreter of PS processes on remote hosts")
    p.add_argument("--ssh", default="ssh -o BatchMode=yes",
                   help="ssh program and options for remote hosts (one shell string)")
    p.add_argument("--horovod", action="store_true",
                   help="start the workers with one 'horovodrun --gloo' instead of one by one")
    p.add_argument("--horovodrun", default="horovodrun", help="the horovodrun program")
    p.add_argument("--token-file", help="file with the cluster token (default: $HERALD_TOKEN, "
                   "else a random one for a whole-cluster launch)")
    p.add_argument("--grace-s", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL when stopping processes")
    p.add_argument("--start-timeout-s", type=float, default=60.0,
                   help="seconds for every PS to report its port and accept connections")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the worker command (after --)")
    return p


def _token(args: argparse.Namespace, task_mode: bool) -> str:
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise ClusterConfigError(f"--token-file {args.token_file}: the file is empty")
        return token
    token = env.cluster_token()
    if token:
        return token
    if task_mode:
        raise ClusterConfigError(
            "TF_CONFIG task mode: expected the shared cluster token in "
            f"${env.TOKEN_VAR} (e.g. from a Kubernetes Secret) or --token-file: every pod "
            "must use the same token")
    return secrets.token_hex(16)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``herald-run``; returns the exit code (see herald_tf.launch.runner)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.print_usage(sys.stderr)
        print("herald-run: error: expected a worker command after '--'", file=sys.stderr)
        return EXIT_USAGE
    try:
        cluster = load_cluster(args.config)
        options = LaunchOptions(
            command=tuple(command), python=args.python, remote_python=args.remote_python,
            ps_command=tuple(shlex.split(args.ps_command)) if args.ps_command else None,
            ps_args=tuple(shlex.split(args.ps_args)), checkpoint_dir=args.checkpoint_dir,
            workdir=os.getcwd(), ssh=tuple(shlex.split(args.ssh)), horovod=args.horovod,
            horovodrun=tuple(shlex.split(args.horovodrun)))
        check_launch(cluster, options)  # before anything starts
        if args.dry_run:
            for spec in build_process_list(cluster, options):
                print(describe(spec, options))
            if any(e.port == 0 for e in (*cluster.ps, *cluster.workers, cluster.coordinator)):
                print("# port 0: a local PS binds a free port and workers get the bound one; "
                      "local workers and the coordinator get free ports at launch")
            return 0
        token = _token(args, task_mode=cluster.task is not None)
    except (ClusterConfigError, ValueError, OSError) as e:
        print(f"herald-run: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return run_cluster(cluster, options, token, grace_s=args.grace_s,
                       start_timeout_s=args.start_timeout_s)


if __name__ == "__main__":
    sys.exit(main())
