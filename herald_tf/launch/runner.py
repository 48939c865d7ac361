"""Starts and supervises the processes of a launch; never leaves one behind, never hangs.

Order: PS shards first (a local PS on port 0 writes its bound port to a port file), then a TCP
probe of every PS address until all accept connections (or ``start_timeout_s`` passes: a clear
error), then the workers. Each child runs in its own session (``start_new_session``) with a
parent-death signal (``PR_SET_PDEATHSIG`` = SIGKILL, set between fork and exec), its output
prefixed line by line with ``[ps 0]`` / ``[worker 1]``. One thread does everything (a select
loop), so forking children is safe and signal handlers only set a flag.

Outcomes (the launcher's exit code):
  * every worker exits 0: the PS shards are stopped, 0;
  * any process exits non-zero (or a PS exits at all): the others get SIGTERM, then SIGKILL
    after ``grace_s``; the failed process's code (128 + signal when it was killed by one; 1 for a
    PS that exited 0 while workers ran);
  * SIGINT/SIGTERM to the launcher: forwarded to every child, then as above; 128 + signal;
  * a PS that does not come up within ``start_timeout_s``: everything stops, 1;
  * a program that cannot be started: everything stops, 127 (not found) or 126.
Children are signalled by process group (its id is the child's pid), so a shell wrapper's own
children stop too.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from herald_tf import env
from herald_tf.errors import HeraldError
from herald_tf.launch.config import ClusterSpec, Endpoint, Role
from herald_tf.launch.plan import LaunchOptions, ProcessSpec, build_process_list
from herald_tf.launch.remote import ssh_command

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05
_MAX_LINE = 1 << 16


class LaunchError(HeraldError):
    """A process could not be started; the message names it, ``exit_code`` is what to return."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (exit code {_exit_code(returncode)})"
    return f"exited with code {returncode}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (bind 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def assign_free_ports(cluster: ClusterSpec) -> ClusterSpec:
    """Gives local workers and a local coordinator on port 0 a free loopback port each.

    PS shards keep port 0: they bind it themselves and report the bound port (no race).
    """
    held: list[socket.socket] = []  # kept bound until all are picked, so no port repeats

    def fill(e: Endpoint) -> Endpoint:
        if not e.local or e.port != 0:
            return e
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        held.append(s)
        s.bind(("127.0.0.1", 0))
        return dataclasses.replace(e, port=s.getsockname()[1])

    try:
        return dataclasses.replace(cluster, workers=tuple(fill(e) for e in cluster.workers),
                                   coordinator=fill(cluster.coordinator))
    finally:
        for s in held:
            s.close()


def _reachable(address: str, timeout_s: float) -> str | None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as e:
        return e.strerror or str(e)


@dataclasses.dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen
    label: bytes
    fd: int | None
    pending: bytes = b""
    reported: bool = False


class Supervisor:
    """Children started by pid, their prefixed output, and their stopping (one thread only)."""

    def __init__(self, out: BinaryIO, err: TextIO, grace_s: float = 10.0) -> None:
        self.out = out
        self.err = err
        self.grace_s = grace_s
        self.children: list[_Child] = []
        self.received: int | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._pid = os.getpid()
        self._out_broken = False

    def say(self, message: str) -> None:
        """Writes a launcher message to ``err``."""
        try:
            self.err.write(f"herald-run: {message}\n")
            self.err.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def _preexec(self) -> None:
        self._libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != self._pid:  # the launcher died before prctl took effect
            os._exit(1)

    def start(self, spec: ProcessSpec, argv: Sequence[str], extra_env: dict[str, str],
              stdin_data: bytes | None = None) -> _Child:
        """Starts one child in a new session; ``stdin_data`` is written to a kept-open stdin."""
        child_env = dict(os.environ)
        child_env.update(spec.env)
        child_env.update(extra_env)
        proc = subprocess.Popen(
            list(argv), env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            start_new_session=True, preexec_fn=self._preexec, close_fds=True)
        if stdin_data is not None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(stdin_data)
                proc.stdin.flush()
            except BrokenPipeError:
                pass
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        child = _Child(spec, proc, f"[{spec.name}] ".encode(), fd)
        self.children.append(child)
        return child

    def _emit(self, child: _Child, data: bytes, final: bool) -> None:
        child.pending += data
        lines = child.pending.split(b"\n")
        child.pending = lines.pop()
        if final and child.pending or len(child.pending) > _MAX_LINE:
            lines.append(child.pending)
            child.pending = b""
        if self._out_broken:
            return
        try:
            for line in lines:
                self.out.write(child.label + line + b"\n")
        except (BrokenPipeError, ValueError, OSError):
            self._out_broken = True  # e.g. `herald-run ... | head`: keep supervising, drop output

    def _read(self, child: _Child) -> None:
        assert child.fd is not None
        while True:
            try:
                data = os.read(child.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._emit(child, b"", final=True)
                assert child.proc.stdout is not None
                child.proc.stdout.close()
                child.fd = None
                return
            self._emit(child, data, final=False)

    def pump(self, timeout_s: float) -> None:
        """Copies every child's available output lines, waiting up to ``timeout_s`` for some."""
        fds = {c.fd: c for c in self.children if c.fd is not None}
        if not fds:
            time.sleep(timeout_s)
            return
        try:
            ready, _, _ = select.select(list(fds), [], [], timeout_s)
        except InterruptedError:
            ready = []
        for fd in ready:
            self._read(fds[fd])
        self._flush()

    def _flush(self) -> None:
        if not self._out_broken:
            try:
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._out_broken = True

    def drain(self, child: _Child) -> None:
        """Copies what an exited child left in its pipe (its own last lines)."""
        if child.fd is not None:
            self._read(child)
            self._flush()

    def running(self) -> list[_Child]:
        """Children not yet exited."""
        return [c for c in self.children if c.proc.poll() is None]

    def newly_exited(self) -> list[_Child]:
        """Children that exited since the last call, their output drained."""
        out = []
        for c in self.children:
            if not c.reported and c.proc.poll() is not None:
                c.reported = True
                self.drain(c)
                out.append(c)
        return out

    def send(self, child: _Child, sig: int) -> None:
        """Sends ``sig`` to a running child's process group (by its pid)."""
        if child.proc.poll() is not None:
            return
        try:
            os.killpg(child.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(child.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, children: Sequence[_Child], sig: int = signal.SIGTERM) -> None:
        """Sends ``sig`` to ``children``, waits ``grace_s`` for them, then SIGKILLs and reaps."""
        for c in children:
            self.send(c, sig)
        deadline = time.monotonic() + self.grace_s
        while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline:
            self.pump(_POLL_S)
        for c in children:
            if c.proc.poll() is None:
                self.say(f"{c.spec.name} (pid {c.proc.pid}) did not stop within "
                         f"{self.grace_s:g} s; sending SIGKILL")
                self.send(c, signal.SIGKILL)
        for c in children:
            c.proc.wait()
            c.reported = True
            self.drain(c)
            if c.proc.stdin is not None:
                try:
                    c.proc.stdin.close()
                except OSError:
                    pass

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """Stops every child still running (see :meth:`stop`)."""
        self.stop([c for c in self.children if c.proc.poll() is None], sig)


class _Launch:
    def __init__(self, cluster: ClusterSpec, options: LaunchOptions, token: str,
                 sup: Supervisor, start_timeout_s: float) -> None:
        self.cluster = cluster
        self.options = options
        self.token = token
        self.sup = sup
        self.start_timeout_s = start_timeout_s

    def _start(self, spec: ProcessSpec) -> _Child:
        if spec.port_file and os.path.exists(spec.port_file):
            os.unlink(spec.port_file)  # a stale port from an earlier run must not be read
        try:
            if spec.remote:
                return self.sup.start(spec, ssh_command(spec, self.options), {},
                                      stdin_data=(self.token + "\n").encode())
            token_env = {env.TOKEN_VAR: self.token, env.PS_TOKEN_VAR: self.token}
            return self.sup.start(spec, spec.argv, token_env)
        except OSError as e:
            code = 127 if isinstance(e, FileNotFoundError) else 126
            raise LaunchError(f"cannot start {spec.name}: {e}", code) from e

    def _interrupted(self) -> int | None:
        sig = self.sup.received
        if sig is None:
            return None
        self.sup.say(f"received {signal.Signals(sig).name}; stopping "
                     f"{len(self.sup.running())} processes")
        self.sup.stop_all(sig)
        return 128 + sig

    def _fail_start(self, message: str) -> int:
        self.sup.say(f"{message}; stopping {len(self.sup.running())} processes")
        self.sup.stop_all()
        return 1

    def _wait_ports(self, ps: list[_Child]) -> list[int] | int:
        ports = [c.spec.port for c in ps]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            for i, c in enumerate(ps):
                if ports[i] == 0 and c.spec.port_file and os.path.exists(c.spec.port_file):
                    with open(c.spec.port_file) as f:
                        text = f.read().strip()
                    if text.isdigit():
                        ports[i] = int(text)
            if all(ports):
                return ports
            code = self._interrupted()
            if code is not None:
                return code
            for c in self.sup.newly_exited():
                return self._fail_start(f"{c.spec.name} (pid {c.proc.pid}) "
                                        f"{_describe_exit(c.proc.returncode)} before reporting "
                                        "its port")
            if time.monotonic() > deadline:
                late = [c.spec.name for i, c in enumerate(ps) if not ports[i]]
                return self._fail_start(f"{', '.join(late)} did not report a bound port within "
                                        f"{self.start_timeout_s:g} s")
            self.sup.pump(_POLL_S)

    def _wait_reachable(self, addresses: list[str]) -> int | None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = dict(enumerate(addresses))
        why: dict[int, str] = {}
        while pending:
            for i, address in list(pending.items()):
                problem = _reachable(address, timeout_s=min(1.0, self.start_timeout_s))
                if problem is None:
                    del pending[i]
                else:
                    why[i] = problem
            if not pending:
                return None
            code = self._interrupted()
            if code is not None:
                return code
            for c in self.sup.newly_exited():
                return self._fail_start(f"{c.spec.name} (pid {c.proc.pid}) "
                                        f"{_describe_exit(c.proc.returncode)} while starting")
            if time.monotonic() > deadline:
                names = ", ".join(f"ps {i} at {addresses[i]} ({why[i]})" for i in pending)
                return self._fail_start(f"parameter server not reachable within "
                                        f"{self.start_timeout_s:g} s: {names}")
            self.sup.pump(0.2)
        return None

    def _supervise(self) -> int:
        workers = [c for c in self.sup.children if c.spec.role is Role.WORKER]
        task_mode = self.cluster.task is not None
        while True:
            code = self._interrupted()
            if code is not None:
                return code
            self.sup.pump(_POLL_S)
            for c in self.sup.newly_exited():
                rc = c.proc.returncode
                if rc == 0 and (c.spec.role is Role.WORKER or task_mode):
                    continue
                what = _describe_exit(rc)
                if rc == 0:
                    what = "exited with code 0 while the workers were running"
                others = self.sup.running()
                self.sup.say(f"{c.spec.name} (pid {c.proc.pid}) {what}; stopping "
                             f"{len(others)} other processes")
                self.sup.stop(others)
                return _exit_code(rc) or 1
            if workers and all(c.reported for c in workers):
                rest = self.sup.running()
                if rest:
                    who = ("horovodrun" if self.options.horovod and not task_mode
                           else f"all {len(workers)} workers")
                    self.sup.say(f"{who} finished; stopping {len(rest)} parameter servers")
                    self.sup.stop(rest)
                return 0
            if not workers and not self.sup.running():
                return 0

    def run(self) -> int:
        if self.cluster.task is None:
            self.cluster = assign_free_ports(self.cluster)
        specs = build_process_list(self.cluster, self.options)
        ps_specs = [s for s in specs if s.role is Role.PS]
        ps = [self._start(s) for s in ps_specs]
        bound = self._wait_ports(ps)
        if isinstance(bound, int):
            return bound
        if self.cluster.task is not None and self.cluster.task.role is Role.PS:
            return self._supervise()
        ports = [e.port for e in self.cluster.ps]
        for c, port in zip(ps, bound, strict=True):
            ports[c.spec.rank] = port
        specs = build_process_list(self.cluster, self.options, ps_ports=ports)
        addresses = [Endpoint(e.host, p).address for e, p in zip(self.cluster.ps, ports,
                                                                 strict=True)]
        code = self._wait_reachable(addresses)
        if code is not None:
            return code
        for s in specs:
            if s.role is Role.WORKER:
                self._start(s)
        return self._supervise()


class RunFolder:
    """The launcher's temporary folder (``herald-run-*``: the PS port files), marked as in use by
    a lock its launcher holds while it runs. The kernel drops the lock of a launcher killed with
    SIGKILL, which could not remove its folder; the next launcher's sweep removes every such
    folder of this user (folders without a lock file, from older launchers, are left alone)."""

    PREFIX = "herald-run-"
    LOCK = "launcher.lock"

    def __init__(self) -> None:
        self.sweep(tempfile.gettempdir())
        self.path = tempfile.mkdtemp(prefix=self.PREFIX)
        # locked before it has its name, so a sweep never finds it unlocked
        fd, tmp = tempfile.mkstemp(dir=self.path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(self.path, self.LOCK))
        self._lock_fd = fd

    def close(self) -> None:
        """Removes the folder, then drops the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)

    @classmethod
    def sweep(cls, parent: str) -> list[str]:
        """Removes the run folders in ``parent`` of this user whose launcher is gone (their lock
        is free); returns them."""
        removed = []
        try:
            names = [n for n in os.listdir(parent) if n.startswith(cls.PREFIX)]
        except OSError:
            return removed
        for name in names:
            folder = os.path.join(parent, name)
            try:
                if os.lstat(folder).st_uid != os.getuid():
                    continue
                fd = os.open(os.path.join(folder, cls.LOCK), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # not ours, not a folder, or no lock file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its launcher still runs
            finally:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        return removed


def run_cluster(cluster: ClusterSpec, options: LaunchOptions, token: str, *,
                out: BinaryIO | None = None, err: TextIO | None = None,
                grace_s: float = 10.0, start_timeout_s: float = 60.0) -> int:
    """Runs a launch to its end and returns the launcher's exit code (see the module doc).

    Local workers and a local coordinator on port 0 get free loopback ports; PS port files go to
    a temporary ``run_dir`` unless one is given. Installs SIGINT/SIGTERM handlers for the duration
    when called from the main thread (they only record the signal; the loop forwards it). Every
    child is reaped before returning.
    """
    sup = Supervisor(out or sys.stdout.buffer, err or sys.stderr, grace_s)
    run_dir = RunFolder()
    options = dataclasses.replace(
        options, run_dir=options.run_dir or run_dir.path,
        launcher_pid=options.launcher_pid if options.launcher_pid is not None else os.getpid())
    previous = {}
    if threading.current_thread() is threading.main_thread():
        def handler(signum: int, _frame: object) -> None:
            sup.received = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        return _Launch(cluster, options, token, sup, start_timeout_s).run()
    except LaunchError as e:
        sup.say(f"{e}; stopping {len(sup.running())} processes")
        sup.stop_all()
        return e.exit_code
    finally:
        try:
            sup.stop_all(signal.SIGKILL if sup.received else signal.SIGTERM)
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            run_dir.close()
