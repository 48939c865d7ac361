"""``ps``: every worker pulls every unique key it reads and pushes every gradient; no cache.

Rows never touched before are initialised locally instead of pulled (first-touch rule). Pulls
carry the value only (the PS applies the optimizer). Nothing is held between steps.
"""

from __future__ import annotations

from typing import Any

from herald_tf.scheduler.types import PlanPolicy, Traffic


class PsPolicy(PlanPolicy):
    """The plain parameter-server plan."""

    def plan(self, ctx: Any, table: Any, dirs: list[Any], traffic: Traffic) -> None:
        """Pull (or init) every key read, push every gradient, one PS update per key."""
        for w, keys in enumerate(ctx.worker_keys):
            slots = ctx.read_slots[w]
            for key in keys:
                if table.touched(key):
                    ctx.add(w, "pull", key, slots[key], table.version.get(key, 0))
                    traffic.pull_rows += 1
                else:
                    ctx.add(w, "init", key, slots[key])
        for w, keys in enumerate(ctx.worker_keys):
            for key in keys:
                ctx.add(w, "push", key)
                traffic.push_rows += 1
        for key in ctx.order:
            table.version[key] = table.version.get(key, 0) + 1
            table.touch(key)
