"""Distributed training equals the single-process reference (DESIGN §2a), the core test.

N worker processes (tf.distribute MultiWorkerMirroredStrategy over loopback, one thread each)
train against 2 real PS processes; after the run every touched embedding row (read from the PS)
and every dense weight must equal the single-process reference trained on the same global
batches, within 1e-5 relative. CI runs a pairwise subset; the full matrix is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ps_cluster import PsCluster
from reference import assert_close
from training_job import job_env, run_jobs, worker_commands

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_job.py")
TIMEOUT_S = 300
STEPS = 31  # >= 20 (distributed training issue) and >= 30 (herald scheduling issue)

CI_CASES = [
    # (workers, mode, model, optimizer, dense backend)
    (2, "ps", "wdl", "adagrad", "tf_distribute"),
    (2, "het", "dlrm", "adam", "tf_distribute"),
    (2, "herald", "wdl", "sgd", "tf_distribute"),
    (4, "ps", "dlrm", "sgd", "tf_distribute"),
    (4, "herald", "wdl", "adagrad", "tf_distribute"),
    (2, "ps", "dlrm", "adagrad", "horovod"),
    (2, "herald", "dlrm", "adam", "horovod"),
    (2, "allreduce", "dlrm", "adagrad", "tf_distribute"),
]
FULL = [(n, mode, model, opt, backend) for n in (2, 4)
        for mode in ("ps", "het", "herald", "allreduce") for model in ("wdl", "dlrm")
        for opt in ("sgd", "adagrad", "adam")
        for backend in ("tf_distribute", "horovod")]
SLOW_CASES = [c for c in FULL if c not in CI_CASES]


SERVE = """
import sys, numpy as np, tensorflow as tf
data = np.load(sys.argv[2])
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](
    categorical=tf.constant(data["categorical"]), dense=tf.constant(data["dense"]))
assert not any(m.startswith("herald_tf") for m in sys.modules), "herald_tf imported"
assert "_herald_ops" not in open("/proc/self/maps").read(), "op library loaded"
np.save(sys.argv[3], list(out.values())[0].numpy())
"""


def _check_exports_agree(tmp_path) -> None:
    """The export of the distributed run (from the PS) and of the reference serve the same
    predictions in plain TensorFlow, on held-out rows with unseen keys too."""
    from training_job import make_data

    held_out = make_data(2, 32, seed=7)
    held_out["categorical"][:8, 1] += 100_000  # unseen keys
    np.savez(tmp_path / "held_out.npz", **held_out)
    env = {k: v for k, v in job_env().items() if k != "PYTHONPATH"}
    outs = []
    for name in ("export_ref", "export_dist"):
        subprocess.run([sys.executable, "-c", SERVE, str(tmp_path / name),
                        str(tmp_path / "held_out.npz"), str(tmp_path / f"{name}.npy")],
                       check=True, env=env, cwd=str(tmp_path))
        outs.append(np.load(tmp_path / f"{name}.npy"))
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-6, atol=1e-7)


def _check_equivalence(tmp_path, workers: int, mode: str, model: str, optimizer: str,
                       backend: str, export: bool = False, worker_args: tuple[str, ...] = (),
                       reference_args: tuple[str, ...] = ()) -> dict:
    if backend == "horovod":
        pytest.importorskip("horovod.tensorflow")
    common = ["--model", model, "--optimizer", optimizer, "--num-workers", str(workers),
              "--steps", str(STEPS), "--batch-size", "8"]
    ref_out = str(tmp_path / "ref.npz")
    with PsCluster(num_shards=2, tmp_dir=tmp_path, num_workers=workers) as cluster:
        exports = (["--export", str(tmp_path / "export_ref")] if export else [])
        commands = [[sys.executable, JOB, "reference", *common, *reference_args, "--out", ref_out,
                     *exports]]
        commands += worker_commands(
            cluster, [str(tmp_path / f"w{rank}.npz") for rank in range(workers)],
            [*common, "--mode", mode, "--backend", backend, *worker_args,
             "--checkpoint-dir", cluster.checkpoint_dir, "--checkpoint-every", "1000",
             *(["--export", str(tmp_path / "export_dist")] if export else [])])
        run_jobs(commands, [str(tmp_path / f"job{i}.log") for i in range(len(commands))],
                 [job_env()] * len(commands), TIMEOUT_S)
        ref = np.load(ref_out)
        if export:
            _check_exports_agree(tmp_path)
        transport = cluster.transport()
        for name in [k.split("/", 1)[1] for k in ref.files if k.startswith("rows/")]:
            if mode == "allreduce":  # every replica holds the whole table
                for rank in range(workers):
                    with np.load(tmp_path / f"w{rank}.npz") as out:
                        assert_close(out[f"rows/{name}"], ref[f"rows/{name}"])
                continue
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


def _check_traffic_matches_schedule(stats: list[dict], workers: int, mode: str) -> None:
    """The rows the workers moved equal the schedule's replayed traffic, and the transport's
    gradient bytes equal those rows times the tables' widths (cross-check of the
    transmissions benchmark's accounting against a real run)."""
    from training_job import FIELDS, make_data

    from herald_tf.scheduler import SchedulerConfig, make_engine

    config = SchedulerConfig(num_workers=workers, batch_size=8, num_fields=FIELDS,
                             cache_capacity=0 if mode == "ps" else 40, policy=mode,
                             allocation="grouped" if mode == "herald" else "none")
    engine = make_engine(config, emit_plans=False)
    g = workers * 8
    keys = make_data(STEPS, g)["categorical"]
    for step in range(STEPS):
        engine.step(keys[step * g:(step + 1) * g])
    moved = {kind: sum(s["rows"].get(kind, 0) for s in stats) for kind in ("pull", "push",
                                                                             "flush")}
    assert moved == {"pull": engine.traffic.pull_rows, "push": engine.traffic.push_rows,
                     "flush": engine.traffic.flush_rows}
    widths = 4 * (4 + 1)  # float32 gradients of the dim-4 deep and dim-1 wide tables
    assert sum(s["bytes"]["pushed_gradients"] for s in stats) == moved["push"] * widths


@pytest.mark.parametrize("workers,mode,model,optimizer,backend", CI_CASES)
def test_distributed_training_equals_single_process(tmp_path, workers, mode, model, optimizer,
                                                    backend):
    # WDL and DLRM trained with 2 workers are also exported and served by plain TensorFlow.
    export = workers == 2 and (mode, backend) in (("herald", "tf_distribute"),
                                                  ("ps", "horovod"))
    result = _check_equivalence(tmp_path, workers, mode, model, optimizer, backend, export)
    assert all(s["steps"] == STEPS for s in result["stats"])
    if mode in ("ps", "herald"):  # worker 0 scheduled for all and posted the others' plans
        assert all(s["bytes"]["plans"] > 0 for s in result["stats"])
    if mode != "allreduce":  # scheduling, or taking and decoding plans, was measured
        assert all(s["scheduler_cpu_s"] > 0 for s in result["stats"])
    if model == "wdl":
        _check_traffic_matches_schedule(result["stats"], workers, mode)


def test_workers_running_their_own_scheduler_copies_train_the_same(tmp_path) -> None:
    # the CI cases above take their plans from worker 0 (plan_source="rank0", the default)
    result = _check_equivalence(tmp_path, 2, "herald", "wdl", "adagrad", "tf_distribute",
                                worker_args=("--plan-source", "every_worker"))
    assert all(s["bytes"]["plans"] == 0 for s in result["stats"])
    _check_traffic_matches_schedule(result["stats"], 2, "herald")


@pytest.mark.parametrize("mode,model,optimizer", [("herald", "wdl", "adam"),
                                                   ("allreduce", "dlrm", "sgd")])
def test_rows_trained_with_a_learning_rate_schedule_equal_single_process(tmp_path, mode, model,
                                                                         optimizer) -> None:
    # herald: the workers' local applies and the PS (through the push) take the rate of the
    # runtime's step; allreduce: the training graph takes it; the reference: the optimizer's
    # iterations. A rate from any other step would change the rows.
    result = _check_equivalence(tmp_path, 2, mode, model, optimizer, "tf_distribute",
                                worker_args=("--lr-decay",), reference_args=("--lr-decay",))
    assert all(s["steps"] == STEPS for s in result["stats"])


@pytest.mark.slow
@pytest.mark.parametrize("workers,mode,model,optimizer,backend", SLOW_CASES)
def test_full_matrix_equals_single_process(tmp_path, workers, mode, model, optimizer, backend):
    _check_equivalence(tmp_path, workers, mode, model, optimizer, backend)


def _pulled_rows(tmp_path, bound: int) -> int:
    """Rows the 2 workers of a het run with ``bound`` pulled over the run."""
    common = ["--model", "wdl", "--optimizer", "sgd", "--num-workers", "2", "--steps",
              str(STEPS), "--batch-size", "8", "--mode", "het", "--bound", str(bound)]
    run = tmp_path / f"bound{bound}"
    run.mkdir()
    with PsCluster(num_shards=2, tmp_dir=run, num_workers=2) as cluster:
        commands = worker_commands(cluster, [str(run / f"w{rank}.npz") for rank in range(2)],
                                   common)
        run_jobs(commands, [str(run / f"w{rank}.log") for rank in range(2)], [job_env()] * 2,
                 TIMEOUT_S)
    stats = [json.loads(str(np.load(run / f"w{rank}.npz")["stats"])) for rank in range(2)]
    assert all(s["steps"] == STEPS for s in stats)
    return sum(s["rows"].get("pull", 0) for s in stats)


def test_het_with_a_staleness_bound_trains_and_pulls_less(tmp_path) -> None:
    """HET with bound 2 runs through the real PS and re-pulls fewer rows than bound 0 (its
    measured staleness is checked against the bound in test_het_staleness.py)."""
    assert _pulled_rows(tmp_path, 2) < _pulled_rows(tmp_path, 0)
