"""Supervisor: prefixed output lines, stopping with escalation, free ports (single process); the
launcher's run folder and the sweep of those whose launcher is gone."""

from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from herald_tf.launch.config import Endpoint, Role, parse_dist_config
from herald_tf.launch.plan import ProcessSpec
from herald_tf.launch.runner import RunFolder, Supervisor, assign_free_ports, free_port


def _spec(name: str) -> ProcessSpec:
    return ProcessSpec(Role.WORKER, 0, "localhost", 0, (), {}, name=name)


def _run_to_end(sup: Supervisor, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sup.running() and time.monotonic() < deadline:
        sup.pump(0.05)
    for c in sup.newly_exited():
        assert c.proc.returncode is not None


def test_every_line_is_prefixed_including_a_last_line_without_newline() -> None:
    out = io.BytesIO()
    sup = Supervisor(out, io.StringIO())
    code = ("import sys; sys.stderr.write('err\\n'); sys.stderr.flush(); "
            "sys.stdout.write('a\\nb\\n\\nc')")
    sup.start(_spec("worker 3"), [sys.executable, "-c", code], {})
    _run_to_end(sup)
    lines = out.getvalue().splitlines()
    assert lines == [b"[worker 3] err", b"[worker 3] a", b"[worker 3] b", b"[worker 3] ",
                     b"[worker 3] c"]


def test_a_very_long_line_is_split_rather_than_held() -> None:
    out = io.BytesIO()
    sup = Supervisor(out, io.StringIO())
    sup.start(_spec("ps 0"), [sys.executable, "-c", "print('x' * 200000)"], {})
    _run_to_end(sup)
    chunks = out.getvalue().split(b"\n")[:-1]
    assert all(c.startswith(b"[ps 0] ") for c in chunks) and len(chunks) >= 2
    assert sum(len(c) - len(b"[ps 0] ") for c in chunks) == 200000


def test_stop_escalates_to_sigkill_after_the_grace_period() -> None:
    err = io.StringIO()
    sup = Supervisor(io.BytesIO(), err, grace_s=0.3)
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', "
            "flush=True); time.sleep(60)")
    child = sup.start(_spec("worker 0"), [sys.executable, "-c", code], {})
    while b"ready" not in sup.out.getvalue():  # type: ignore[attr-defined]
        sup.pump(0.05)
    t0 = time.monotonic()
    sup.stop_all()
    assert child.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 10
    assert f"worker 0 (pid {child.proc.pid}) did not stop within 0.3 s; sending SIGKILL" \
        in err.getvalue()


class _Broken(io.RawIOBase):
    def write(self, data: object) -> int:
        raise BrokenPipeError


def test_a_closed_output_does_not_stop_supervision() -> None:
    sup = Supervisor(_Broken(), io.StringIO())  # type: ignore[arg-type]
    sup.start(_spec("worker 0"), [sys.executable, "-c", "print('lost')"], {})
    _run_to_end(sup)
    assert not sup.running()


def test_free_ports_go_to_local_workers_and_coordinator_only() -> None:
    assert 0 < free_port() < 65536
    cluster = parse_dist_config({"nodes": [{"host": "localhost", "servers": 1, "workers": 2}]})
    filled = assign_free_ports(cluster)
    assert filled.ps == (Endpoint("localhost", 0),)
    ports = [e.port for e in (*filled.workers, filled.coordinator)]
    assert all(p > 0 for p in ports) and len(set(ports)) == 3
    remote = parse_dist_config({"nodes": [{"host": "node1", "workers": 1}]})
    assert assign_free_ports(remote) == remote


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of its own for the run folders of the test."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _left_by_a_killed_launcher(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / RunFolder.LOCK).touch()  # nobody holds its lock
    (folder / "ps-0.port").write_text("1234")
    return folder


def test_a_run_folder_is_removed_when_its_launch_ends(temp_dir: Path) -> None:
    run = RunFolder()
    assert os.path.dirname(run.path) == str(temp_dir)
    assert os.path.basename(run.path).startswith("herald-run-")
    run.close()
    assert list(temp_dir.iterdir()) == []


def test_a_new_launcher_removes_the_run_folders_of_killed_ones_only(temp_dir: Path) -> None:
    dead = _left_by_a_killed_launcher(temp_dir, "herald-run-dead")
    older = temp_dir / "herald-run-older"  # an older launcher's: no lock file
    older.mkdir()
    other = temp_dir / "not-herald"
    other.mkdir()
    (other / RunFolder.LOCK).touch()
    running = RunFolder()
    try:
        assert not dead.exists() and older.exists() and other.exists()
        assert RunFolder.sweep(str(temp_dir)) == []  # the running launcher's folder stays
        assert os.path.isdir(running.path)
    finally:
        running.close()
    assert sorted(p.name for p in temp_dir.iterdir()) == ["herald-run-older", "not-herald"]
