"""herald-run end to end with real processes: stand-in PS and worker scripts (no TensorFlow).

Each test runs ``python -m herald_tf.launch.cli`` in its own session; every stand-in writes its
pid to ``$LAUNCH_TEST_DIR``, and the tests check that each of them is gone when the launcher
returns (the fixture SIGKILLs any survivor by pid, so a failure leaves nothing behind).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# A PS stand-in: the flags herald-ps gets, a listening socket, the bound port in --port-file.
STANDIN_PS = """
import os, signal, socket, sys, time
a = sys.argv[1:]
flag = lambda name, default=None: a[a.index(name) + 1] if name in a else default
shard = flag("--shard-index")
with open(os.path.join(os.environ["LAUNCH_TEST_DIR"], f"ps-{shard}.pid"), "w") as f:
    f.write(str(os.getpid()))
mode = os.environ.get("STANDIN_PS_MODE", "serve")
if mode == "crash":
    sys.exit(5)
if mode == "hang":
    time.sleep(600)
s = socket.socket()
s.bind((flag("--address"), int(flag("--port"))))
if mode != "deaf":  # "deaf": reports a bound port but never accepts connections
    s.listen(16)
port_file = flag("--port-file")
if port_file:
    with open(port_file + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
print("standin ps listening", s.getsockname()[1], "token", len(os.environ["HERALD_PS_TOKEN"]))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if mode == "quit":  # exit 0 once a worker runs
    while not os.path.exists(os.path.join(os.environ["LAUNCH_TEST_DIR"], "worker-0.pid")):
        time.sleep(0.02)
    sys.exit(0)
while True:
    time.sleep(1)
"""

# Worker stand-in prologue: records its pid, then runs the test's snippet.
WORKER_PROLOGUE = """
import json, os, signal, socket, sys, time
rank = int(os.environ["HERALD_RANK"])
with open(os.path.join(os.environ["LAUNCH_TEST_DIR"], f"worker-{rank}.pid"), "w") as f:
    f.write(str(os.getpid()))
"""

FOREVER = "while True: time.sleep(0.05)\n"


def ready(rank: int) -> str:
    """A snippet: wait until worker ``rank`` has called ``mark_ready()``."""
    return (f"while not os.path.exists(os.path.join(os.environ['LAUNCH_TEST_DIR'], "
            f"'ready-{rank}')):\n    time.sleep(0.02)\n")


# Appended to the prologue: a worker tells the test (and other workers) that its set-up is done.
MARK_READY = ("def mark_ready():\n    open(os.path.join(os.environ['LAUNCH_TEST_DIR'], "
              "f'ready-{rank}'), 'w').close()\n")


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str
    elapsed: float


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Launcher:
    """Runs herald-run in a new session and tracks the stand-ins' pids."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pid_dir = tmp / "pids"
        self.pid_dir.mkdir()
        (tmp / "ps.py").write_text(STANDIN_PS)
        self.procs: list[subprocess.Popen] = []

    def config(self, servers: int, workers: int, host: str = "localhost") -> str:
        path = self.tmp / "dist.yml"
        path.write_text(f"nodes:\n  - host: {host}\n    servers: {servers}\n"
                        f"    workers: {workers}\n    chief: true\n")
        return str(path)

    def start(self, args: list[str], worker: str | None = None, *, ps_mode: str = "serve",
              real_ps: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "herald_tf.launch.cli", "--grace-s", "2", *args]
        if not real_ps:
            argv[3:3] = ["--ps-command", f"{sys.executable} {self.tmp / 'ps.py'}"]
        if worker is not None:
            argv += ["--", sys.executable, "-c", WORKER_PROLOGUE + MARK_READY + worker]
        elif "--" not in args:
            argv += ["--", sys.executable, "-c", "pass"]
        # TMPDIR: the launcher's run folder lands in the test's folder, also when a test kills
        # the launcher before it can remove it
        child_env = dict(os.environ, LAUNCH_TEST_DIR=str(self.pid_dir), TMPDIR=str(self.tmp),
                         STANDIN_PS_MODE=ps_mode, **(env or {}))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=child_env)
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], worker: str | None = None, **kw: object) -> Result:
        t0 = time.monotonic()
        proc = self.start(args, worker, **kw)  # type: ignore[arg-type]
        out, err = proc.communicate(timeout=40)
        return Result(proc.returncode, out.decode(), err.decode(), time.monotonic() - t0)

    def pids(self) -> dict[str, int]:
        out = {}
        for path in glob.glob(str(self.pid_dir / "*.pid")):
            text = Path(path).read_text().strip()
            if text:
                out[os.path.basename(path)[:-4]] = int(text)
        return out

    def wait_for_pids(self, names: set[str], timeout_s: float = 20.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        while not names <= set(self.pids()):
            assert time.monotonic() < deadline, f"only {sorted(self.pids())} started"
            time.sleep(0.02)
        return self.pids()

    def wait_for_file(self, name: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.pid_dir / name).exists():
            assert time.monotonic() < deadline, f"{name} never appeared"
            time.sleep(0.02)

    def assert_all_gone(self, timeout_s: float = 5.0) -> None:
        pids = self.pids()
        assert pids, "no stand-in recorded its pid"
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [n for n, p in pids.items() if _alive(p)], "left running"

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in self.pids().values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    runner = Launcher(tmp_path)
    yield runner
    runner.cleanup()


def test_all_workers_exit_zero_then_ps_stop_and_exit_code_zero(launcher: Launcher) -> None:
    worker = """
addrs = os.environ["HERALD_PS_ADDRS"].split(",")
for a in addrs:
    host, port = a.rsplit(":", 1)
    socket.create_connection((host, int(port)), timeout=5).close()
tf = json.loads(os.environ["TF_CONFIG"])
print("rank", rank, "of", os.environ["HERALD_NUM_WORKERS"], "ps", len(addrs),
      "token", len(os.environ["HERALD_TOKEN"]), "tf", tf["task"]["index"],
      len(tf["cluster"]["worker"]), "coord", os.environ["HERALD_COORDINATOR"].split(":")[0])
"""
    r = launcher.run(["-c", launcher.config(2, 2)], worker)
    assert r.code == 0, r.err
    lines = set(r.out.splitlines())
    for rank in (0, 1):
        expected = f"rank {rank} of 2 ps 2 token 32 tf {rank} 2 coord 127.0.0.1"
        assert f"[worker {rank}] {expected}" in lines
    assert sum(line.startswith("[ps 0] standin ps listening") for line in lines) == 1
    assert "all 2 workers finished; stopping 2 parameter servers" in r.err
    launcher.assert_all_gone()


def test_worker_failure_stops_everything_and_propagates_its_code(launcher: Launcher) -> None:
    worker = "if rank == 1:\n    time.sleep(0.3)\n    print('giving up')\n    sys.exit(3)\n"
    r = launcher.run(["-c", launcher.config(2, 2)], worker + FOREVER)
    assert r.code == 3
    pid = launcher.pids()["worker-1"]
    assert f"herald-run: worker 1 (pid {pid}) exited with code 3; stopping 3 other processes" \
        in r.err
    assert "[worker 1] giving up" in r.out.splitlines()
    assert r.elapsed < 20
    launcher.assert_all_gone()


def test_worker_ignoring_sigterm_is_killed_after_the_grace_period(launcher: Launcher) -> None:
    worker = ("if rank == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "    mark_ready()\nelse:\n" + "\n".join("    " + line for line in
                                                   ready(0).splitlines()) + "\n    sys.exit(1)\n")
    r = launcher.run(["-c", launcher.config(1, 2), "--grace-s", "0.5"], worker + FOREVER)
    assert r.code == 1
    assert "worker 1 (pid" in r.err and "exited with code 1" in r.err
    assert "worker 0 (pid" in r.err and "did not stop within 0.5 s; sending SIGKILL" in r.err
    launcher.assert_all_gone()


def test_worker_killed_by_a_signal_gives_128_plus_signal(launcher: Launcher) -> None:
    worker = "if rank == 0:\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    r = launcher.run(["-c", launcher.config(1, 2)], worker + FOREVER)
    assert r.code == 128 + signal.SIGKILL
    assert "worker 0 (pid" in r.err and "was killed by SIGKILL (exit code 137)" in r.err
    launcher.assert_all_gone()


def test_ps_that_never_reports_a_port_fails_within_the_timeout(launcher: Launcher) -> None:
    r = launcher.run(["-c", launcher.config(2, 1), "--start-timeout-s", "1"], "print('never')",
                     ps_mode="hang")
    assert r.code == 1
    assert "herald-run: ps 0, ps 1 did not report a bound port within 1 s; stopping 2 processes" \
        in r.err
    assert r.elapsed < 10
    assert "worker-0" not in launcher.pids()
    launcher.assert_all_gone()


def test_ps_that_reports_a_port_but_never_listens_fails_within_the_timeout(
        launcher: Launcher) -> None:
    r = launcher.run(["-c", launcher.config(1, 1), "--start-timeout-s", "1"], "print('never')",
                     ps_mode="deaf")
    assert r.code == 1
    port = r.out.split("standin ps listening ")[1].split()[0]
    assert (f"herald-run: parameter server not reachable within 1 s: ps 0 at 127.0.0.1:{port} "
            "(Connection refused); stopping 1 processes") in r.err
    assert r.elapsed < 10 and "worker-0" not in launcher.pids()
    launcher.assert_all_gone()


def test_ps_crashing_at_start_is_named_with_its_code(launcher: Launcher) -> None:
    r = launcher.run(["-c", launcher.config(2, 1)], "print('never')", ps_mode="crash")
    assert r.code == 1
    assert "exited with code 5 before reporting its port" in r.err
    launcher.assert_all_gone()


def test_ps_exiting_while_workers_run_is_a_failure(launcher: Launcher) -> None:
    r = launcher.run(["-c", launcher.config(1, 1)], FOREVER, ps_mode="quit")
    assert r.code == 1
    assert "ps 0 (pid" in r.err and "exited with code 0 while the workers were running" in r.err
    launcher.assert_all_gone()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ps_in_tf_config_task_mode_fails_within_the_timeout(
        launcher: Launcher) -> None:
    port = _closed_port()
    tf_config = {"cluster": {"chief": ["127.0.0.1:1"], "ps": [f"127.0.0.1:{port}"]},
                 "task": {"type": "chief", "index": 0}}
    r = launcher.run(["--start-timeout-s", "1.5"], "print('started')",
                     env={"TF_CONFIG": json.dumps(tf_config), "HERALD_TOKEN": "t"})
    assert r.code == 1
    assert (f"herald-run: parameter server not reachable within 1.5 s: ps 0 at 127.0.0.1:{port} "
            "(Connection refused)") in r.err
    assert r.elapsed < 10
    assert "started" not in r.out and launcher.pids() == {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_is_forwarded_and_stops_every_child(
        launcher: Launcher, sig: signal.Signals) -> None:
    worker = (f"signal.signal({int(sig)}, lambda *_: (print('got', {int(sig)}), sys.exit(9)))\n"
              "mark_ready()\n")
    proc = launcher.start(["-c", launcher.config(2, 2)], worker + FOREVER)
    launcher.wait_for_pids({"ps-0", "ps-1", "worker-0", "worker-1"})
    launcher.wait_for_file("ready-0")
    launcher.wait_for_file("ready-1")
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + sig
    assert f"herald-run: received {sig.name}; stopping 4 processes" in err.decode()
    assert f"[worker 1] got {int(sig)}" in out.decode().splitlines()
    launcher.assert_all_gone()


def test_a_worker_program_that_does_not_exist_stops_the_ps(launcher: Launcher) -> None:
    r = launcher.run(["-c", launcher.config(1, 1), "--", "/nonexistent/herald-worker"])
    assert r.code == 127
    assert ("herald-run: cannot start worker 0: [Errno 2] No such file or directory: "
            "'/nonexistent/herald-worker'; stopping 1 processes") in r.err
    launcher.assert_all_gone()


def test_tf_config_pods_run_one_task_each(launcher: Launcher) -> None:
    port = _closed_port()
    cluster = {"chief": ["127.0.0.1:1"], "ps": [f"127.0.0.1:{port}"]}
    pod_env = {"HERALD_TOKEN": "shared"}
    ps_pod = launcher.start([], env={**pod_env, "TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "ps", "index": 0}})})
    worker = "print('ps at', os.environ['HERALD_PS_ADDRS'], os.environ['HERALD_TOKEN'])\n"
    r = launcher.run([], worker, env={**pod_env, "TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "chief", "index": 0}})})
    assert r.code == 0, r.err
    assert f"[worker 0] ps at 127.0.0.1:{port} shared" in r.out.splitlines()
    assert ps_pod.poll() is None  # a PS pod serves until it is stopped
    os.kill(ps_pod.pid, signal.SIGTERM)
    out, _ = ps_pod.communicate(timeout=20)
    assert ps_pod.returncode == 128 + signal.SIGTERM
    assert out.decode().startswith(f"[ps 0] standin ps listening {port} token 6")
    launcher.assert_all_gone()


def test_children_die_with_a_killed_launcher(launcher: Launcher) -> None:
    proc = launcher.start(["-c", launcher.config(1, 2)], FOREVER)
    launcher.wait_for_pids({"ps-0", "worker-0", "worker-1"})
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: the parent-death signal must
    proc.wait()
    launcher.assert_all_gone()
    # its run folder stayed; the next launcher removes it (and its own when it ends)
    assert len(list(launcher.tmp.glob("herald-run-*"))) == 1
    assert launcher.run(["-c", launcher.config(0, 1)], "pass\n").code == 0
    assert list(launcher.tmp.glob("herald-run-*")) == []


def test_remote_hosts_run_through_the_ssh_command_with_the_token_on_stdin(
        launcher: Launcher) -> None:
    fake_ssh = launcher.tmp / "fake-ssh"
    fake_ssh.write_text('#!/bin/sh\n# fake ssh: drop the host, run the script here\nshift\n'
                        'exec sh -c "$1"\n')
    fake_ssh.chmod(0o755)
    done = launcher.tmp / "worker-0-done"
    worker = ("print('remote rank', rank, 'token', len(os.environ['HERALD_TOKEN']), "
              f"os.getcwd(), flush=True)\ndone = {str(done)!r}\n"
              "if rank == 0:\n    open(done, 'w').close()\n    sys.exit(0)\n"
              "while not os.path.exists(done):\n    time.sleep(0.02)\nsys.exit(4)\n")
    r = launcher.run(["-c", launcher.config(0, 2, host="node-a"), "--ssh", str(fake_ssh)],
                     worker)
    assert r.code == 4
    assert f"[worker 0] remote rank 0 token 32 {os.getcwd()}" in r.out.splitlines()
    assert "worker 1 (pid" in r.err and "exited with code 4" in r.err
    launcher.assert_all_gone()


def test_real_parameter_servers_answer_workers_that_use_the_launch_env(
        launcher: Launcher) -> None:
    worker = """
from herald_tf import env
from herald_tf.transport import make_transport
t = make_transport("grpc", addresses=list(env.ps_addresses()), token=env.cluster_token())
health = t.health()
t.close()
print("shards", sorted(h["shard_index"] for h in health), "workers",
      {h["num_workers"] for h in health}, "rank", env.rank(), "of", env.num_workers())
"""
    r = launcher.run(["-c", launcher.config(2, 1)], worker, real_ps=True)
    assert r.code == 0, r.err
    assert "[worker 0] shards [0, 1] workers {1} rank 0 of 1" in r.out.splitlines()
    assert "[ps 1] herald-ps listening on 127.0.0.1:" in r.out


HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="horovodrun is not installed")
def test_horovod_mode_starts_the_workers_with_horovodrun(launcher: Launcher) -> None:
    worker = ("import os\nprint('hvd', os.environ['HOROVOD_RANK'], os.environ['HERALD_PS_ADDRS'],"
              " len(os.environ['HERALD_TOKEN']), os.environ['HERALD_NUM_WORKERS'])\n")
    r = launcher.run(["-c", launcher.config(1, 2), "--horovod", "--horovodrun", HOROVODRUN,
                      "--", sys.executable, "-c", worker])
    assert r.code == 0, r.err
    hvd = sorted(line.split(":", 1)[1] for line in r.out.splitlines()
                 if line.startswith("[horovodrun] [") and "hvd" in line)
    port = r.out.split("standin ps listening ")[1].split()[0]
    assert hvd == [f"hvd {i} 127.0.0.1:{port} 32 2" for i in (0, 1)]
    assert "horovodrun finished; stopping 1 parameter servers" in r.err
    launcher.assert_all_gone()
