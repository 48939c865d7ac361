"""Exact resume: a run killed after its step-30 checkpoint and resumed equals an uninterrupted run.

Run A trains 60 steps straight (checkpointing at 30 like B). Run B trains with a checkpoint at
step 30; worker 1 dies by SIGKILL after step 33, the other worker is stopped and PS shard 1 is
killed by SIGKILL; the PS restart from their step-29 checkpoint and the workers resume at
step 30 and train to 60. Every embedding row, optimizer state and version on the PS and every
dense weight must equal run A's within 1e-6 (DESIGN §2a asks for bitwise; it is checked too).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
from ps_cluster import PsCluster
from test_training_equivalence import JOB, TIMEOUT_S
from training_job import job_env, run_jobs, worker_commands

from herald_tf.keras.checkpoint import CheckpointError, load_worker  # noqa: F401

STEPS, CHECKPOINT, CRASH = 60, 30, 33


def _workers(cluster: PsCluster, tmp, tag: str, mode: str, extra: list[str]) -> list[list[str]]:
    return worker_commands(
        cluster, [str(tmp / f"{tag}-w{rank}.npz") for rank in range(2)],
        ["--model", "wdl", "--optimizer", "adam", "--num-workers", "2", "--steps", str(STEPS),
         "--batch-size", "8", "--mode", mode, "--checkpoint-dir", cluster.checkpoint_dir,
         "--checkpoint-every", str(CHECKPOINT), *extra])


def _state(cluster: PsCluster, keys: np.ndarray, tmp, tag: str) -> dict[str, np.ndarray]:
    transport = cluster.transport()
    out = {}
    for table in ("deep_embedding", "wide_embedding"):
        rows = transport.pull(table, keys, with_state=True).wait()
        out[f"{table}/values"], out[f"{table}/versions"] = rows.values, rows.versions
        out[f"{table}/state"] = rows.state
    for rank in range(2):
        with np.load(tmp / f"{tag}-w{rank}.npz") as worker:
            out.update({f"w{rank}/{k}": worker[k] for k in worker.files if k.startswith("dense/")})
    return out


def _keys() -> np.ndarray:
    sys.path.insert(0, os.path.dirname(JOB))
    from training_job import make_data

    return np.unique(make_data(STEPS, 16)["categorical"])


def _run_all(commands: list[list[str]], logs: list[str]) -> None:
    run_jobs(commands, logs, [job_env()] * len(commands), TIMEOUT_S)


@pytest.mark.parametrize("mode", ["ps", "herald"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, mode: str) -> None:
    keys = _keys()
    with PsCluster(num_shards=2, tmp_dir=tmp_path / "a", num_workers=2) as cluster:
        _run_all(_workers(cluster, tmp_path, "a", mode, []),
                 [str(tmp_path / f"a{i}.log") for i in range(2)])
        expected = _state(cluster, keys, tmp_path, "a")

    with PsCluster(num_shards=2, tmp_dir=tmp_path / "b", num_workers=2) as cluster:
        crashed = _workers(cluster, tmp_path, "b", mode, [])
        crashed[1] += ["--crash-after", str(CRASH)]
        with pytest.raises(AssertionError, match=f"exited {-signal.SIGKILL}"):
            _run_all(crashed, [str(tmp_path / f"b{i}.log") for i in range(2)])
        cluster.kill(1)
        for shard in range(2):
            if shard == 0:
                cluster.kill(0)
            cluster.restart(shard, restore=str(CHECKPOINT - 1))
        resumed = _workers(cluster, tmp_path, "b", mode, ["--resume-step", str(CHECKPOINT)])
        _run_all(resumed, [str(tmp_path / f"c{i}.log") for i in range(2)])
        actual = _state(cluster, keys, tmp_path, "b")

    assert expected.keys() == actual.keys()
    for name, want in expected.items():
        np.testing.assert_allclose(actual[name], want, rtol=1e-6, atol=0, err_msg=name)
        np.testing.assert_array_equal(actual[name], want, err_msg=f"{name} not bitwise")
