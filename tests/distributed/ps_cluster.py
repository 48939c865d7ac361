"""Starts real ``herald-ps`` server processes for multi-process tests (shared helper).

API (reused by the training-runtime tests)::

    from ps_cluster import PsCluster, start_process, spawn_context

    with PsCluster(num_shards=2, tmp_dir=tmp_path, num_workers=3) as cluster:
        transport = cluster.transport()        # a GrpcTransport to every shard (closed on exit)
        fast = cluster.transport("grpc+tcp")   # pull/push over the shards' TCP data plane
        cluster.addresses                      # ["127.0.0.1:PORT", ...], shard i at index i
        cluster.kill(1)                        # SIGKILL shard 1 (by pid) and reap it
        cluster.restart(1, restore="latest")   # start it again (new port) from the checkpoint
        cluster.token, cluster.checkpoint_dir, cluster.pids, cluster.log(i)

    proc, port = start_process([sys.executable, "-m", "pkg.mod", ...], port_file, log_path)
    ctx = spawn_context()                      # multiprocessing "spawn" context (never fork)

Every process is started with ``start_new_session=True`` and ``--parent-pid`` (the server sets
PR_SET_PDEATHSIG, so it dies with the test process), binds port 0 on 127.0.0.1 and reports the
bound port through ``--port-file``; ``stop()`` (also on ``__exit__``) kills each process by pid
and reaps it. Processes are started with subprocess (fork + exec, no Python code runs in the
child before exec) so it is safe after gRPC started; Python worker functions should use
``spawn_context()`` (forking after gRPC starts hangs, DESIGN §4a). Server output goes to
``tmp_dir/ps-<i>.log`` (printed in the error when a server fails to start).
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

START_TIMEOUT_S = 30.0


def spawn_context() -> Any:
    """The multiprocessing context to start Python worker processes with (spawn, never fork)."""
    return multiprocessing.get_context("spawn")


def start_process(argv: Sequence[str], port_file: str, log_path: str,
                  env: dict[str, str] | None = None,
                  timeout_s: float = START_TIMEOUT_S) -> tuple[subprocess.Popen, int]:
    """Starts ``argv`` in a new session and waits for the port it writes to ``port_file``."""
    if os.path.exists(port_file):
        os.unlink(port_file)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=env if env is not None else os.environ.copy())
    deadline = time.monotonic() + timeout_s
    while True:
        if os.path.exists(port_file):
            with open(port_file) as f:
                text = f.read().strip()
            if text:
                return proc, int(text)
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            with open(log_path, errors="replace") as f:
                log_text = f.read()[-4000:]
            raise RuntimeError(f"{argv[:4]} did not report a port (exit code {proc.returncode})."
                               f" Log:\n{log_text}")
        time.sleep(0.01)


class PsCluster:
    """``num_shards`` herald-ps processes on loopback, killed by pid on ``stop()``."""

    def __init__(self, num_shards: int, tmp_dir: str | os.PathLike, *,
                 num_workers: int | None = None, token: str | None = None,
                 checkpoint_dir: str | None = None, extra_args: Sequence[str] = ()) -> None:
        self.num_shards = num_shards
        self.tmp_dir = str(tmp_dir)
        self.num_workers = num_workers
        self.token = token or secrets.token_hex(16)
        self.checkpoint_dir = checkpoint_dir or os.path.join(self.tmp_dir, "ckpt")
        self.extra_args = list(extra_args)
        self.procs: list[subprocess.Popen | None] = [None] * num_shards
        self.ports: list[int] = [0] * num_shards
        self._transports: list[Any] = []
        os.makedirs(self.checkpoint_dir, exist_ok=True)

    @property
    def addresses(self) -> list[str]:
        """"127.0.0.1:port" of every shard, shard i at index i."""
        return [f"127.0.0.1:{p}" for p in self.ports]

    @property
    def pids(self) -> list[int]:
        """Process ids of the running shards (0 for a killed one)."""
        return [p.pid if p is not None else 0 for p in self.procs]

    def log(self, shard: int) -> str:
        """Path of a shard's log file."""
        return os.path.join(self.tmp_dir, f"ps-{shard}.log")

    def _start(self, shard: int, restore: str = "none") -> None:
        token_file = os.path.join(self.tmp_dir, "token")
        with open(token_file, "w") as f:
            f.write(self.token)
        argv = [sys.executable, "-m", "herald_tf.ps.server_main", "--port", "0",
                "--token-file", token_file, "--checkpoint-dir", self.checkpoint_dir,
                "--shard-index", str(shard), "--num-shards", str(self.num_shards),
                "--port-file", os.path.join(self.tmp_dir, f"ps-{shard}.port"),
                "--parent-pid", str(os.getpid()), "--restore", restore, *self.extra_args]
        if self.num_workers is not None:
            argv += ["--num-workers", str(self.num_workers)]
        proc, port = start_process(argv, os.path.join(self.tmp_dir, f"ps-{shard}.port"),
                                   self.log(shard))
        self.procs[shard] = proc
        self.ports[shard] = port

    def start(self) -> PsCluster:
        """Starts every shard; returns self."""
        try:
            for shard in range(self.num_shards):
                self._start(shard)
        except BaseException:
            self.stop()
            raise
        return self

    def transport(self, kind: str = "grpc", **options: Any) -> Any:
        """A new transport of ``kind`` (grpc, grpc+tcp) to the current addresses (closed by
        ``stop()``)."""
        from herald_tf.transport import make_transport

        t = make_transport(kind, addresses=self.addresses, token=self.token, **options)
        self._transports.append(t)
        return t

    def kill(self, shard: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to one shard's process (by pid) and reaps it."""
        proc = self.procs[shard]
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, sig)
            proc.wait(timeout=30)
        self.procs[shard] = None

    def restart(self, shard: int, restore: str = "latest") -> None:
        """Starts a killed shard again (a new port), restoring ``restore`` ('none'/'latest'/N)."""
        self.kill(shard)
        self._start(shard, restore)

    def stop(self) -> None:
        """Closes transports and kills every shard by pid."""
        for t in self._transports:
            t.close()
        self._transports.clear()
        for shard in range(self.num_shards):
            self.kill(shard)

    def __enter__(self) -> PsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
