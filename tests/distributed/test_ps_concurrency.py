"""8 client threads × many requests against 2 herald-ps processes: no update is lost.

Eight workers (threads sharing ONE transport, so its thread safety is exercised too) push 25
steps of SGD gradients of ones (lr 1) for random overlapping keys, and pull and read versions in
between, never more than the PS's push window ahead of the last step all of them pushed (a
shard refuses a push further ahead). Afterwards every row's version equals the number of steps
that pushed it and its value equals initial − (number of pushes of it): exact in float32.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from herald_tf import _core
from herald_tf.config import OptimizerConfig, TableConfig

THREADS, STEPS, KEYS, DIM = 8, 25, 100, 4
PUSH_WINDOW = 8  # herald-ps's --push-window default
CFG = TableConfig("t", DIM, seed=5, optimizer=OptimizerConfig("sgd", learning_rate=1.0))


@pytest.mark.parametrize("kind", ["grpc", "grpc+tcp"])
def test_eight_threads_lose_no_update(ps_cluster, kind: str) -> None:
    cluster = ps_cluster(2, num_workers=THREADS)
    transport = cluster.transport(kind)
    transport.connect([CFG], num_workers=THREADS)
    rng = np.random.default_rng(3)
    chosen = {(t, w): np.unique(rng.integers(0, KEYS, 20)).astype(np.int64)
              for t in range(STEPS) for w in range(THREADS)}
    errors: list = []
    requests = [0] * THREADS
    # ranks whose push of each step every shard recorded; a step is applied once all did
    recorded = [0] * STEPS
    progress = threading.Condition()

    def wait_applied(step: int, handle) -> None:
        """Waits until every rank's push of ``step`` is recorded (``step`` is then applied) or
        another thread failed."""
        handle.wait()
        with progress:
            recorded[step] += 1
            progress.notify_all()
            if not progress.wait_for(lambda: recorded[step] == THREADS or errors, 60):
                raise AssertionError(f"Expected every rank to push step {step} within 60 s.")

    def run(rank: int) -> None:
        try:
            handles = []
            for t in range(STEPS):
                k = chosen[t, rank]
                r = transport.pull("t", k).wait()
                assert r.values.shape == (k.shape[0], DIM)
                assert (transport.versions("t", k).wait() >= 0).all()
                # a shard refuses a step more than PUSH_WINDOW ahead of its applied one: a
                # thread the scheduler left behind must not make the others' pushes fail
                if t >= PUSH_WINDOW:
                    wait_applied(t - PUSH_WINDOW, handles[t - PUSH_WINDOW])
                    if errors:
                        return  # another thread failed: its error is the one reported
                handles.append(transport.push(t, rank, {"t": (k, np.ones((k.shape[0], DIM),
                                                                         np.float32))},
                                              {"t": 1.0}))
                requests[rank] += 3
            for h in handles:
                h.wait()
        except BaseException as e:  # noqa: BLE001
            with progress:
                errors.append(e)
                progress.notify_all()

    threads = [threading.Thread(target=run, args=(w,)) for w in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors[0]
    assert sum(requests) == THREADS * STEPS * 3
    keys = np.arange(KEYS, dtype=np.int64)
    transport.push(STEPS, 0, {}, {})  # nobody else pushes STEPS: it stays pending
    r = transport.pull("t", keys, min_versions=np.zeros(KEYS, np.int64)).wait()
    pushes = np.zeros(KEYS, np.int64)
    steps_touching = np.zeros(KEYS, np.int64)
    for t in range(STEPS):
        touched = np.zeros(KEYS, bool)
        for w in range(THREADS):
            pushes[chosen[t, w]] += 1
            touched[chosen[t, w]] = True
        steps_touching += touched
    assert [h["applied_step"] for h in transport.health()] == [STEPS - 1] * 2
    np.testing.assert_array_equal(r.versions, steps_touching)
    init = _core.init_rows(CFG.initializer, CFG.seed, keys, DIM)
    np.testing.assert_allclose(r.values, init - pushes[:, None].astype(np.float32), rtol=0,
                               atol=1e-5)
