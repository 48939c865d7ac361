"""Distributed training equals the single-process reference (DESIGN §2a), the core test.

N worker processes (tf.distribute MultiWorkerMirroredStrategy over loopback, one thread each)
train against 2 real PS processes; after the run every touched embedding row (read from the PS)
and every dense weight must equal the single-process reference trained on the same global
batches, within 1e-5 relative. CI runs a pairwise subset; the full matrix is marked slow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from ps_cluster import PsCluster
from reference import assert_close

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_job.py")
TIMEOUT_S = 300

CI_CASES = [
    # (workers, mode, model, optimizer, dense backend)
    (2, "ps", "wdl", "adagrad", "tf_distribute"),
    (2, "het", "dlrm", "adam", "tf_distribute"),
    (2, "herald", "wdl", "sgd", "tf_distribute"),
    (4, "ps", "dlrm", "sgd", "tf_distribute"),
    (2, "ps", "dlrm", "adagrad", "horovod"),
    (2, "herald", "dlrm", "adam", "horovod"),
]
FULL = [(n, mode, model, opt, backend) for n in (2, 4) for mode in ("ps", "het", "herald")
        for model in ("wdl", "dlrm") for opt in ("sgd", "adagrad", "adam")
        for backend in ("tf_distribute", "horovod")]
SLOW_CASES = [c for c in FULL if c not in CI_CASES]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    return env


def _run_all(commands: list[list[str]], logs: list[str]) -> None:
    """Runs the commands at once; on any failure or timeout kills the rest (by pid)."""
    procs = []
    try:
        for cmd, log in zip(commands, logs):
            with open(log, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=_env(),
                                              start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        while any(p.poll() is None for p in procs):
            failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for i, p in sorted(enumerate(procs), key=lambda ip: ip[1].poll() is None):
            if p.poll() != 0:
                text = open(logs[i], errors="replace").read()[-4000:]
                raise AssertionError(f"{commands[i][2]} {i} exited {p.poll()}:\n{text}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _check_equivalence(tmp_path, workers: int, mode: str, model: str, optimizer: str,
                       backend: str) -> dict:
    if backend == "horovod":
        pytest.importorskip("horovod.tensorflow")
    common = ["--model", model, "--optimizer", optimizer, "--num-workers", str(workers),
              "--steps", "21", "--batch-size", "8"]
    ref_out = str(tmp_path / "ref.npz")
    with PsCluster(num_shards=2, tmp_dir=tmp_path, num_workers=workers) as cluster:
        ports = _free_ports(workers + 1)
        hosts = [f"127.0.0.1:{p}" for p in ports[:workers]]
        commands = [[sys.executable, JOB, "reference", *common, "--out", ref_out]]
        for rank in range(workers):
            tf_config = json.dumps({"cluster": {"worker": hosts},
                                    "task": {"type": "worker", "index": rank}})
            commands.append([sys.executable, JOB, "worker", *common, "--rank", str(rank),
                             "--mode", mode, "--ps-addrs", ",".join(cluster.addresses),
                             "--token", cluster.token, "--tf-config", tf_config,
                             "--backend", backend, "--coordinator", f"127.0.0.1:{ports[-1]}",
                             "--out", str(tmp_path / f"w{rank}.npz")])
        _run_all(commands, [str(tmp_path / f"job{i}.log") for i in range(len(commands))])
        ref = np.load(ref_out)
        transport = cluster.transport()
        for name in [k.split("/", 1)[1] for k in ref.files if k.startswith("rows/")]:
            pulled = transport.pull(name, ref["keys"]).wait()
            assert_close(pulled.values, ref[f"rows/{name}"])
            np.testing.assert_array_equal(pulled.versions, ref[f"versions/{name}"])
    stats = []
    for rank in range(workers):
        out = np.load(tmp_path / f"w{rank}.npz")
        for key in (k for k in ref.files if k.startswith("dense/")):
            assert_close(out[key], ref[key])
        stats.append(json.loads(str(out["stats"])))
    return {"stats": stats}


@pytest.mark.parametrize("workers,mode,model,optimizer,backend", CI_CASES)
def test_distributed_training_equals_single_process(tmp_path, workers, mode, model, optimizer,
                                                    backend):
    result = _check_equivalence(tmp_path, workers, mode, model, optimizer, backend)
    assert all(s["steps"] == 21 for s in result["stats"])


@pytest.mark.slow
@pytest.mark.parametrize("workers,mode,model,optimizer,backend", SLOW_CASES)
def test_full_matrix_equals_single_process(tmp_path, workers, mode, model, optimizer, backend):
    _check_equivalence(tmp_path, workers, mode, model, optimizer, backend)
