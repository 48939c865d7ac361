"""3 herald-ps processes, 3 workers, 50 steps, every optimizer: rows equal a numpy model.

Each worker (a thread with its own gRPC transport) pulls its keys for step t with the versions
the single-process model says they must have (so the pull waits at the server for step t-1),
checks the rows, and pushes its gradients for step t without waiting. Worker 0 also owns a few
private rows: it pulls them with their optimizer state, applies the optimizer locally with the
same kernel, and flushes value + state + version back (DESIGN §3, |A_t(k)| = 1).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ps_model import NumpyTable
from reference import assert_close

from herald_tf import _core
from herald_tf.config import OptimizerConfig, TableConfig

WORKERS, STEPS, DIM, KEY_SPACE = 3, 50, 8, 60
TABLES = [
    TableConfig("sgd", DIM, seed=11, optimizer=OptimizerConfig("sgd", learning_rate=0.1)),
    TableConfig("adagrad", DIM, seed=12, optimizer=OptimizerConfig("adagrad", learning_rate=0.1)),
    TableConfig("adam", DIM, seed=13,
                optimizer=OptimizerConfig("adam", learning_rate=0.01, epsilon=1e-4)),
]
PRIVATE_BASE = 10_000


def lr_at(step: int) -> float:
    return 0.1 / (1 + 0.02 * step)  # a schedule: passed per step to the PS


def plan() -> tuple[dict, dict]:
    """Keys/gradients of every (step, worker, table) and the rows each pull must return."""
    rng = np.random.default_rng(2026)
    work, expected = {}, {}
    models = {c.name: NumpyTable(c) for c in TABLES}
    for t in range(STEPS):
        pushes = {c.name: [] for c in TABLES}
        for w in range(WORKERS):
            for c in TABLES:
                k = np.sort(rng.choice(KEY_SPACE, size=15, replace=False)).astype(np.int64)
                g = rng.normal(scale=0.5, size=(15, DIM)).astype(np.float32)
                work[t, w, c.name] = (k, g)
                expected[t, w, c.name] = models[c.name].get(k)
                pushes[c.name].append((k, g))
        private = np.array([PRIVATE_BASE + t % 4, PRIVATE_BASE + 7], dtype=np.int64)
        pg = rng.normal(size=(2, DIM)).astype(np.float32)
        for c in TABLES:
            work[t, "private", c.name] = (private, pg)
            expected[t, "private", c.name] = models[c.name].get(private)
            # worker 0 applies these locally and flushes; the model applies the same update
            models[c.name].step([(private, pg)], lr_at(t))
            models[c.name].step(pushes[c.name], lr_at(t))
    expected["final"] = models
    return work, expected


def worker(cluster, kind: str, rank: int, work: dict, expected: dict, errors: list) -> None:
    transport = cluster.transport(kind)
    try:
        transport.connect(TABLES, num_workers=WORKERS, rank=rank)
        handles = []
        for t in range(STEPS):
            for c in TABLES:
                k, _ = work[t, rank, c.name]
                v, _, ver = expected[t, rank, c.name]
                r = transport.pull(c.name, k, min_versions=ver, timeout=30).wait()
                np.testing.assert_array_equal(r.versions, ver)
                assert_close(r.values, v)
                if rank == 0:
                    pk, pg = work[t, "private", c.name]
                    pv, ps, pver = expected[t, "private", c.name]
                    rows = transport.pull(c.name, pk, min_versions=pver, with_state=True,
                                          timeout=30).wait()
                    assert_close(rows.values, pv)
                    assert_close(rows.state, ps)
                    _core.sparse_apply(c.optimizer, rows.values, rows.state, rows.versions,
                                       np.arange(2), pg, learning_rate=lr_at(t))
                    transport.flush(c.name, pk, rows.values, rows.state, rows.versions).wait()
            handles.append(transport.push(t, rank,
                                          {c.name: work[t, rank, c.name] for c in TABLES},
                                          {c.name: lr_at(t) for c in TABLES},
                                          wait_applied=t == STEPS - 1, timeout=30))
        for h in handles:  # surfaces any push error
            h.wait()
    except BaseException as e:  # noqa: BLE001 - reported by the test thread
        errors.append(e)


@pytest.mark.parametrize("kind", ["grpc", "grpc+tcp"])
def test_three_servers_three_workers_match_numpy_model(ps_cluster, kind: str) -> None:
    cluster = ps_cluster(3)
    work, expected = plan()
    errors: list = []
    threads = [threading.Thread(target=worker, args=(cluster, kind, r, work, expected, errors))
               for r in range(WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors[0]
    check = cluster.transport(kind)
    health = check.health()
    assert [h["applied_step"] for h in health] == [STEPS - 1] * 3
    keys = np.concatenate([np.arange(KEY_SPACE), PRIVATE_BASE + np.arange(8)]).astype(np.int64)
    for c in TABLES:
        r = check.pull(c.name, keys, with_state=True).wait()
        v, st, ver = expected["final"][c.name].get(keys)
        np.testing.assert_array_equal(r.versions, ver)
        assert_close(r.values, v)
        if c.state_width:
            assert_close(r.state, st)
    sizes = [sum(t["rows"] for t in s["tables"].values()) for s in check.stats()]
    assert sum(sizes) == 3 * (KEY_SPACE + 5)  # rows created only where written
