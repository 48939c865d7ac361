"""Remote hosts: the exact ssh commands (dry run), and the remote script run by a local sh."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from typing import Any

import pytest

from herald_tf.launch import cli
from herald_tf.launch.config import load_cluster, parse_dist_config
from herald_tf.launch.plan import LaunchOptions, build_process_list
from herald_tf.launch.remote import describe, remote_script, ssh_command

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
WATCH = ("exec 3<&0; read -r HERALD_TOKEN <&3 || exit 1; "
         'export HERALD_TOKEN HERALD_PS_TOKEN="$HERALD_TOKEN"; ')
TAIL = (" </dev/null & child=$!; { trap 'kill $cat; exit 0' TERM; cat <&3 >/dev/null & cat=$!; "
        "wait $cat; kill -TERM $child; } >/dev/null 2>&1 & watcher=$!; wait $child; code=$?; "
        "kill $watcher 2>/dev/null; exit $code")


def _remote_cluster():  # noqa: ANN202
    return parse_dist_config({"nodes": [
        {"host": "node1", "servers": 1, "workers": 1, "chief": True},
        {"host": "node2", "servers": 1, "workers": 1, "server_ports": [7000]}]})


def test_ssh_command_of_a_remote_ps_is_exact() -> None:
    options = LaunchOptions(command=("python3", "train.py"), workdir="/srv/job",
                            ssh=("ssh", "-p", "2222"))
    ps1 = build_process_list(_remote_cluster(), options)[1]
    assert ssh_command(ps1, options) == [
        "ssh", "-p", "2222", "node2",
        "cd /srv/job || exit 1; " + WATCH + "env PYTHONUNBUFFERED=1 python3 -m "
        "herald_tf.ps.server_main --address node2 --port 7000 --shard-index 1 --num-shards 2 "
        "--num-workers 2" + TAIL]


def test_ssh_command_of_a_remote_worker_quotes_its_env_and_args() -> None:
    options = LaunchOptions(command=("python3", "train.py", "--name", "a b"), workdir="/srv/job")
    worker1 = build_process_list(_remote_cluster(), options)[3]
    tf_config = ('{"cluster":{"worker":["node1:23500","node2:23500"]},'
                 '"task":{"type":"worker","index":1}}')
    assert ssh_command(worker1, options) == [
        "ssh", "-o", "BatchMode=yes", "node2",
        "cd /srv/job || exit 1; " + WATCH + "env HERALD_COORDINATOR=node1:23399 "
        "HERALD_LOCAL_RANK=0 HERALD_LOCAL_SIZE=1 HERALD_NUM_WORKERS=2 "
        "HERALD_PS_ADDRS=node1:23400,node2:7000 HERALD_RANK=1 PYTHONUNBUFFERED=1 "
        f"{shlex.quote('TF_CONFIG=' + tf_config)} python3 train.py --name 'a b'" + TAIL]


def test_dry_run_prints_every_ssh_command_and_starts_nothing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = cli.main(["-c", "examples/config/dist_remote.yml", "--dry-run", "--",
                     "python3", "examples/ctr/run_herald.py", "--model", "wdl_criteo"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["[ps", "0]"], ["[ps", "1]"], ["[worker", "0]"], ["[worker", "1]"], ["[worker", "2]"],
        ["[worker", "3]"]]
    options = LaunchOptions(command=("python3", "examples/ctr/run_herald.py", "--model",
                                     "wdl_criteo"), workdir=ROOT)
    cluster = load_cluster(os.path.join(ROOT, "examples/config/dist_remote.yml"))
    assert lines == [describe(s, options) for s in build_process_list(cluster, options)]
    assert lines[1] == ("[ps 1] ssh -o BatchMode=yes node2 " + shlex.quote(
        f"cd {ROOT} || exit 1; " + WATCH + "env PYTHONUNBUFFERED=1 python3 -m "
        "herald_tf.ps.server_main --address node2 --port 7000 --shard-index 1 --num-shards 2 "
        "--num-workers 4" + TAIL) + "  # token on stdin")


def test_dry_run_of_a_horovod_launch_prints_horovodrun(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["-c", "examples/config/dist_remote.yml", "--dry-run", "--horovod", "--",
                     "python3", "train.py"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("[horovodrun] env ")
    assert last.endswith(" horovodrun --gloo -np 4 -H node1:2,node2:2 python3 train.py")


def _run_script(tmp_path: Any, program: str, token: str = "s3cret",
                shell: str = "sh") -> subprocess.Popen:
    options = LaunchOptions(command=("sh", "-c", program), workdir=str(tmp_path))
    cluster = parse_dist_config({"nodes": [{"host": "node1", "workers": 1}]})
    spec = build_process_list(cluster, options)[0]
    proc = subprocess.Popen([shell, "-c", remote_script(spec, options.workdir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(f"{token}\n".encode())
    proc.stdin.flush()
    return proc


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_script_reads_the_token_from_stdin_and_returns_the_exit_code(
        tmp_path: Any, shell: str) -> None:
    proc = _run_script(tmp_path, 'echo "$HERALD_TOKEN $HERALD_PS_TOKEN $HERALD_RANK $(pwd)"; '
                                 "exit 7", shell=shell)
    try:
        assert proc.wait(timeout=10) == 7  # stdin stays open: closing it would stop the program
        assert proc.stdout is not None
        assert proc.stdout.read().decode().split() == ["s3cret", "s3cret", "0", str(tmp_path)]
        assert proc.stdin is not None
        deadline = time.monotonic() + 10
        with pytest.raises(BrokenPipeError):  # the watcher is gone: nobody reads the channel
            while time.monotonic() < deadline:
                proc.stdin.write(b"x")
                proc.stdin.flush()
                time.sleep(0.02)
    finally:
        _reap(proc)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_program_gets_sigterm_when_the_ssh_channel_closes(tmp_path: Any,
                                                                 shell: str) -> None:
    marker = tmp_path / "started"
    proc = _run_script(tmp_path, f"trap 'exit 42' TERM; touch {marker}; "
                                 "while true; do sleep 0.05; done", shell=shell)
    try:
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists()
        assert proc.stdin is not None
        proc.stdin.close()  # what ssh's end of the channel does when the launcher stops it
        assert proc.wait(timeout=10) == 42
    finally:
        _reap(proc)
