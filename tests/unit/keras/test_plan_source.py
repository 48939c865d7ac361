"""Workers other than 0 take their plans from worker 0 through the PS (plan_source='rank0')."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from herald_tf.keras import HeraldEmbedding
from herald_tf.keras import runtime as runtime_module
from herald_tf.keras.runtime import STEP_FEATURE, RuntimeConfig, WorkerRuntime
from herald_tf.ps.store import ShardStore
from herald_tf.transport.factory import make_transport

F, B, N, STEPS = 3, 4, 2, 12


def _runtime(rank: int, transport, batches) -> WorkerRuntime:
    runtime = WorkerRuntime(RuntimeConfig(mode="herald", num_workers=N, rank=rank, batch_size=B,
                                          num_fields=F, cache_capacity=8), transport, batches)
    with runtime.scope():
        HeraldEmbedding(2, capacity=200, name="emb")(keras.Input((F,), dtype="int64"))
    return runtime


def test_a_worker_taking_plans_sees_every_step_whatever_its_thread_cpu_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    batches = [{"categorical": rng.integers(0, 40, (N * B, F)).astype(np.int64),
                "label": np.zeros(N * B, np.float32)} for _ in range(STEPS)]
    transport = make_transport("local", stores=[ShardStore(0, 1, N)])
    worker0 = _runtime(0, transport, batches)
    # worker 0 schedules and posts the plans; driving its batches is enough for that
    assert [int(f[STEP_FEATURE][0]) for f, _ in worker0.local_batches()] == list(range(STEPS))

    # the CPU clock of a busy thread far exceeds the step number (it once shared a variable
    # with the first step to take, so later steps were skipped)
    monkeypatch.setattr(runtime_module.time, "thread_time", lambda: 1e6)
    worker1 = _runtime(1, transport, batches)
    steps = [int(f[STEP_FEATURE][0]) for f, _ in worker1.local_batches()]
    assert steps == list(range(STEPS))
