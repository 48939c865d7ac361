"""herald-run's command line: usage errors are clear and exit 2 before anything starts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from herald_tf.launch import cli


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TF_CONFIG", "HERALD_TOKEN", "HERALD_PS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Any) -> None:
    (tmp_path / "d.yml").write_text("nodes: [{host: localhost, workers: 1}]\n")
    code, _, err = _main(capsys, "-c", str(tmp_path / "d.yml"), "--")
    assert code == 2 and "expected a worker command after '--'" in err


def test_bad_config_names_file_and_field(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Any) -> None:
    (tmp_path / "d.yml").write_text("nodes: [{host: localhost, workers: -2}]\n")
    code, _, err = _main(capsys, "-c", str(tmp_path / "d.yml"), "--", "true")
    assert code == 2
    assert err.strip() == ("herald-run: error: d.yml: nodes[0].workers: expected a "
                           "non-negative integer. Received: -2")


def test_no_config_and_no_tf_config(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "--", "true")
    assert code == 2 and "Expected a cluster config: pass -c dist.yml" in err


def test_tf_config_task_mode_needs_the_shared_token(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    code, _, err = _main(capsys, "--", "true")
    assert code == 2 and "expected the shared cluster token in $HERALD_TOKEN" in err


def test_empty_token_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    (tmp_path / "d.yml").write_text("nodes: [{host: localhost, workers: 1}]\n")
    (tmp_path / "token").write_text("\n")
    code, _, err = _main(capsys, "-c", str(tmp_path / "d.yml"), "--token-file",
                         str(tmp_path / "token"), "--", "true")
    assert code == 2 and "the file is empty" in err


def test_seed_form_without_double_dash(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    (tmp_path / "d.yml").write_text("nodes: [{host: localhost, servers: 1, workers: 1}]\n")
    code, out, _ = _main(capsys, "-c", str(tmp_path / "d.yml"), "--dry-run", "python3",
                         "run.py", "--bsp", "0")
    assert code == 0
    assert out.splitlines()[1].endswith(" python3 run.py --bsp 0")
    assert out.splitlines()[1].startswith("[worker 0] env HERALD_COORDINATOR=127.0.0.1:0 ")


@pytest.mark.parametrize("task", [{"type": "worker", "index": 0}, {"type": "ps", "index": 0}],
                         ids=["worker", "ps"])
def test_horovod_in_tf_config_task_mode_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        task: dict[str, Any]) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"],
                                                            "ps": ["localhost:2"]},
                                                "task": task}))
    monkeypatch.setenv("HERALD_TOKEN", "t")
    code, out, err = _main(capsys, "--horovod", "--", "false")
    assert code == 2 and out == ""
    assert ("expected no --horovod in TF_CONFIG task mode: --horovod starts every worker with "
            "one horovodrun") in err
    assert f"Received: --horovod with task {task['type']} 0." in err


def test_dry_run_of_a_seed_dist_yml_whose_chief_runs_no_worker(
        capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    (tmp_path / "d.yml").write_text(
        "nodes:\n  - host: localhost\n    servers: 1\n    chief: true\n"
        "  - host: localhost\n    workers: 2\n")
    code, out, _ = _main(capsys, "-c", str(tmp_path / "d.yml"), "--dry-run", "--", "true")
    assert code == 0
    assert [line[1:line.index("]")] for line in out.splitlines() if line.startswith("[")] == [
        "ps 0", "worker 0", "worker 1"]
