"""StalenessMeter: HET staleness (PS clock minus the copy's version) from replayed plans."""

from __future__ import annotations

import numpy as np

from herald_tf.keras.staleness import StalenessMeter
from herald_tf.scheduler import StepPlan


def _plan(slots: dict[int, int], pull=(), init=(), push=(), install=()) -> StepPlan:
    """A het plan: every key read (at ``slots[key]``) is updated locally."""
    a = lambda v: np.asarray(list(v), np.int64)  # noqa: E731
    return StepPlan(keys=a(slots), key_slots=a(slots.values()), pull_keys=a(pull),
                    init_keys=a(init), local_keys=a(slots), local_slots=a(slots.values()),
                    push_keys=a(push), install_keys=a(k for k, _, _ in install),
                    install_src=a(s for _, s, _ in install),
                    install_dst=a(d for _, _, d in install))


def test_a_cached_copy_is_as_stale_as_the_updates_pushed_since_it_was_read() -> None:
    meter = StalenessMeter(num_workers=2, rank=0)
    # Step 0: both workers create key 7 in a staging slot and install it in cache slot 1;
    # worker 1 pushes its update (clock 1), worker 0 keeps its update pending (copy version 1).
    steps = [[_plan({7: 10}, init=[7], install=[(7, 10, 1)]),
              _plan({7: 10}, init=[7], push=[7], install=[(7, 10, 1)])],
             # Step 1: worker 0 reads its copy (clock 1 - version 1 = 0) and pushes its 2
             # updates; worker 1 pushes one more (clock 4).
             [_plan({7: 1}, push=[7]), _plan({7: 1}, push=[7])],
             # Step 2: worker 0's copy has version 2, the PS clock is 4: staleness 2.
             [_plan({7: 1}), _plan({})]]
    for plans in steps:
        meter.before_step(plans[0])
        meter.after_step(plans)
    assert meter.stats()["max"] == 2 and meter.stats()["stale_reads"] == 1
    assert meter.stats()["reads"] == 3
    # A pull reads at the PS clock (staleness 0). The PS applied key 7 at steps 0 and 1.
    meter.before_step(_plan({7: 11}, pull=[7]))
    meter.check_pulled_versions(np.array([2]))
    assert meter.stats()["version_mismatches"] == 0
    meter.check_pulled_versions(np.array([3]))
    assert meter.stats()["version_mismatches"] == 1
    assert meter.stats()["max"] == 2 and meter.stats()["reads"] == 4
