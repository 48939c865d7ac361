"""The concrete process list of a launch: which program runs where, with which env and argv.

:func:`build_process_list` is the one function that turns a :class:`ClusterSpec` into
:class:`ProcessSpec` entries; the runner starts them, ``--dry-run`` prints them. The cluster token
is never part of a spec (so a printed plan never shows it): the runner passes it by environment
to local processes and on the standard input of ssh (see :mod:`herald_tf.launch.remote`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from collections.abc import Mapping, Sequence

from herald_tf import env
from herald_tf.launch.config import (
    ClusterConfigError,
    ClusterSpec,
    Endpoint,
    Role,
    is_local_host,
    tf_config_for,
)

PS_MODULE = "herald_tf.ps.server_main"


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to launch: the worker command and the knobs of the PS and remote commands.

    Args:
      command: the worker program and its arguments (what follows ``--``).
      python: interpreter of local PS processes.
      remote_python: interpreter of PS processes on remote hosts.
      ps_command: replaces ``[python, -m, herald_tf.ps.server_main]`` (tests, custom builds);
        the PS flags are appended to it.
      ps_args: extra flags for every PS process (e.g. ``--push-window 4``).
      checkpoint_dir: ``--checkpoint-dir`` of the PS processes.
      run_dir: local directory for the PS port files (the runner makes a temporary one).
      workdir: directory remote commands ``cd`` into (the launcher's, as horovodrun assumes).
      ssh: the ssh program and its options; the host and the remote script are appended.
      horovod: start the workers with one ``horovodrun --gloo`` (it ssh-es to remote hosts).
      horovodrun: the horovodrun program.
      launcher_pid: set as ``HERALD_LAUNCHER_PID`` in every local process when given.
    """

    command: tuple[str, ...]
    python: str = sys.executable
    remote_python: str = "python3"
    ps_command: tuple[str, ...] | None = None
    ps_args: tuple[str, ...] = ()
    checkpoint_dir: str | None = None
    run_dir: str | None = None
    workdir: str | None = None
    ssh: tuple[str, ...] = ("ssh", "-o", "BatchMode=yes")
    horovod: bool = False
    horovodrun: tuple[str, ...] = ("horovodrun",)
    launcher_pid: int | None = None

    def __post_init__(self) -> None:
        for name in ("command", "ps_args", "ssh", "horovodrun"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(a, str) for a in value):
                raise ValueError(f"Expected a tuple of strings. Received: {name}={value!r}")
        if not self.command:
            raise ValueError("Expected a worker command after '--'. Received: command=()")
        if not self.ssh or not self.horovodrun:
            raise ValueError("Expected non-empty ssh and horovodrun programs")


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process of the launch.

    Args:
      role: ``Role.PS`` or ``Role.WORKER``.
      rank: the shard index of a PS, the rank of a worker (0 for the single horovodrun).
      host: where it runs (a loopback host runs locally, others through ssh).
      port: the PS port (0: bound at start and read back from ``port_file``) or the worker's
        TF_CONFIG port.
      argv: the program and arguments as run on ``host``.
      env: variables set on top of the inherited environment (never the token).
      remote: started through ssh.
      port_file: where a local PS started on port 0 writes its bound port.
      name: the label of its output lines and messages (``ps 0``, ``worker 1``).
    """

    role: Role
    rank: int
    host: str
    port: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    remote: bool = False
    port_file: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", types.MappingProxyType(dict(self.env)))
        if not self.name:
            object.__setattr__(self, "name", f"{self.role.value} {self.rank}")


def _ps_spec(cluster: ClusterSpec, options: LaunchOptions, shard: int,
             task_mode: bool) -> ProcessSpec:
    e = cluster.ps[shard]
    remote = not task_mode and not e.local
    if task_mode:
        bind = "127.0.0.1" if e.local else "0.0.0.0"
    else:
        bind = e.connect_host
    program = options.ps_command or ((options.remote_python if remote else options.python),
                                     "-m", PS_MODULE)
    argv = [*program, "--address", bind, "--port", str(e.port), "--shard-index", str(shard),
            "--num-shards", str(len(cluster.ps)), "--num-workers", str(cluster.num_workers)]
    if options.checkpoint_dir:
        argv += ["--checkpoint-dir", options.checkpoint_dir]
    port_file = None
    if e.port == 0 and not remote:
        port_file = os.path.join(options.run_dir or ".", f"ps-{shard}.port")
        argv += ["--port-file", port_file]
    argv += options.ps_args
    return ProcessSpec(Role.PS, shard, e.host, e.port, tuple(argv), _common_env(options),
                       remote=remote, port_file=port_file)


def _common_env(options: LaunchOptions) -> dict[str, str]:
    out = {"PYTHONUNBUFFERED": "1"}
    if options.launcher_pid is not None:
        out[env.LAUNCHER_PID_VAR] = str(options.launcher_pid)
    return out


def _worker_spec(cluster: ClusterSpec, options: LaunchOptions, rank: int, ps_addrs: str,
                 task_mode: bool) -> ProcessSpec:
    e = cluster.workers[rank]
    same_host = [r for r, w in enumerate(cluster.workers) if w.host == e.host]
    worker_env = _common_env(options)
    worker_env.update({
        env.PS_ADDRS_VAR: ps_addrs,
        env.RANK_VAR: str(rank),
        env.NUM_WORKERS_VAR: str(cluster.num_workers),
        env.LOCAL_RANK_VAR: str(same_host.index(rank)),
        env.LOCAL_SIZE_VAR: str(len(same_host)),
        env.COORDINATOR_VAR: cluster.coordinator.address,
        "TF_CONFIG": json.dumps(tf_config_for(cluster, rank), separators=(",", ":")),
    })
    remote = not task_mode and not e.local
    return ProcessSpec(Role.WORKER, rank, e.host, e.port, options.command, worker_env,
                       remote=remote)


def _horovod_spec(cluster: ClusterSpec, options: LaunchOptions, ps_addrs: str) -> ProcessSpec:
    slots: dict[str, int] = {}
    for w in cluster.workers:
        host = "localhost" if is_local_host(w.host) else w.host
        slots[host] = slots.get(host, 0) + 1
    hosts = ",".join(f"{h}:{n}" for h, n in slots.items())
    argv = (*options.horovodrun, "--gloo", "-np", str(cluster.num_workers), "-H", hosts,
            *options.command)
    worker_env = _common_env(options)
    worker_env.update({env.PS_ADDRS_VAR: ps_addrs,
                       env.NUM_WORKERS_VAR: str(cluster.num_workers),
                       env.COORDINATOR_VAR: cluster.coordinator.address})
    return ProcessSpec(Role.WORKER, 0, "localhost", 0, argv, worker_env, name="horovodrun")


def check_launch(cluster: ClusterSpec, options: LaunchOptions) -> None:
    """Raises ``ClusterConfigError`` for options this cluster cannot honour (no side effects).

    ``--horovod`` starts all the workers with one ``horovodrun`` from this host; in TF_CONFIG
    task mode the launcher runs only its own pod's task, so it cannot, and Horovod's dense sync
    without horovodrun needs every worker on one host (herald_tf/dense/horovod.py).
    """
    task = cluster.task
    if options.horovod and task is not None:
        raise ClusterConfigError(
            f"{cluster.source}: expected no --horovod in TF_CONFIG task mode: --horovod starts "
            "every worker with one horovodrun, and a task launch runs one process per pod. "
            f"Received: --horovod with task {task.role.value} {task.index}. Launch Horovod jobs "
            "from one host with herald-run -c CLUSTER --horovod (no task), or leave out "
            "--horovod and sync the dense weights with tf.distribute")


def build_process_list(cluster: ClusterSpec, options: LaunchOptions,
                       ps_ports: Sequence[int] | None = None) -> list[ProcessSpec]:
    """The processes of a launch: every PS shard (shard order), then every worker (rank order).

    ``ps_ports`` are the bound ports of the PS shards once known (a local PS on port 0 reports
    its port at start); the workers' ``HERALD_PS_ADDRS`` use them, else the configured ports. In
    TF_CONFIG task mode (``cluster.task`` set) the list holds only the local task, run locally; a
    PS there binds 0.0.0.0 (127.0.0.1 for a loopback host). With ``options.horovod`` the workers
    are one ``horovodrun`` process (its ranks come from Horovod, so ``HERALD_RANK`` is unset);
    with a task as well they raise (:func:`check_launch`). Pure: no process is started and no
    port is bound.
    """
    check_launch(cluster, options)
    if ps_ports is not None and len(ps_ports) != len(cluster.ps):
        raise ValueError(f"Expected {len(cluster.ps)} PS ports. Received: ps_ports={ps_ports!r}")
    ports = list(ps_ports) if ps_ports is not None else [e.port for e in cluster.ps]
    ps_addrs = ",".join(Endpoint(e.host, p).address for e, p in zip(cluster.ps, ports,
                                                                    strict=True))
    task = cluster.task
    if task is not None:
        if task.role is Role.PS:
            return [_ps_spec(cluster, options, task.index, task_mode=True)]
        return [_worker_spec(cluster, options, task.index, ps_addrs, task_mode=True)]
    specs = [_ps_spec(cluster, options, i, task_mode=False) for i in range(len(cluster.ps))]
    if options.horovod:
        specs.append(_horovod_spec(cluster, options, ps_addrs))
    else:
        specs += [_worker_spec(cluster, options, r, ps_addrs, task_mode=False)
                  for r in range(cluster.num_workers)]
    return specs
