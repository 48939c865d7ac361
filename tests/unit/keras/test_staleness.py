"""StalenessMeter: HET staleness (PS clock minus the copy's version) from replayed plans."""

from __future__ import annotations

import numpy as np

from herald_tf.keras.staleness import StalenessMeter
from herald_tf.scheduler import StepPlan


def _plan(keys=(), pull=(), init=(), push=(), writeback=()) -> StepPlan:
    a = lambda v: np.asarray(v, np.int64)  # noqa: E731
    return StepPlan(keys=a(keys), pull_keys=a(pull), init_keys=a(init), local_keys=a(keys),
                    push_keys=a(push), writeback_keys=a(writeback))


def test_a_cached_copy_is_as_stale_as_the_updates_pushed_since_it_was_read() -> None:
    meter = StalenessMeter(num_workers=2, rank=0)
    # Step 0: both workers create key 7; worker 1 pushes its update (clock 1), worker 0 keeps
    # its update pending (copy version 1: its own update).
    steps = [[_plan([7], init=[7]), _plan([7], init=[7], push=[7])],
             # Step 1: worker 0 reads its copy (clock 1 - version 1 = 0) and pushes 2 updates;
             # worker 1 pushes one more (clock 4).
             [_plan([7], push=[7]), _plan([7], push=[7])],
             # Step 2: worker 0's copy has version 2, the PS clock is 4: staleness 2.
             [_plan([7]), _plan([])]]
    for plans in steps:
        meter.before_step(plans[0])
        meter.after_step(plans)
    assert meter.stats()["max"] == 2 and meter.stats()["stale_reads"] == 1
    assert meter.stats()["reads"] == 3
    # A pull resets the copy: read at the PS clock. The PS applied key 7 at steps 0 and 1.
    meter.before_step(_plan([7], pull=[7]))
    meter.check_pulled_versions(np.array([7]), np.array([2]))
    assert meter.stats()["version_mismatches"] == 0
    meter.check_pulled_versions(np.array([7]), np.array([3]))
    assert meter.stats()["version_mismatches"] == 1 and meter.stats()["max"] == 2
