"""``herald``: the exact communication plan of DESIGN §3.

Per step t and key k with users A (workers whose samples read k):

1. If a worker o owns k dirty and A != {o}, o flushes k (value + state) before step t; the PS
   owns k again and o keeps a clean, usable copy.
2. Every user without a usable copy pulls k (with its optimizer state when |A| = 1), or
   initialises it if k was never touched (first-touch rule). A held copy is always usable:
   copies are dropped when stale.
3. |A| = 1: the user applies the optimizer locally and owns k (dirty); other copies are dropped.
   |A| > 1: every user pushes its gradient, the PS applies their sum once; all copies dropped.
4. Each worker inserts its private keys into its directory and evicts down to capacity; a dirty
   victim is written back (flushed) to the PS after the step.
"""

from __future__ import annotations

from typing import Any

from herald_tf.scheduler.types import PlanPolicy, Traffic


class HeraldPolicy(PlanPolicy):
    """Herald's plan made exact; see the module docstring."""

    def plan(self, ctx: Any, table: Any, dirs: list[Any], traffic: Traffic) -> None:
        """Plans one step; see the module docstring."""
        n = ctx.config.num_workers
        for key in ctx.order:
            owner = table.owner(key)
            if owner >= 0 and ctx.users[key] != 1 << owner:
                ctx.add(owner, "flush", key, dirs[owner].get(key).slot)
                traffic.flush_rows += 1
                dirs[owner].get(key).dirty = False
                table.set_owner(key, -1)
        for w, keys in enumerate(ctx.worker_keys):
            slots = ctx.read_slots[w]
            for key in keys:
                if key in ctx.held[w]:
                    continue
                if table.touched(key):
                    ctx.add(w, "pull", key, slots[key], table.version.get(key, 0))
                    traffic.pull_rows += 1
                    if ctx.users[key] == 1 << w:  # applied here: the state comes along
                        traffic.pull_state_rows += 1
                else:
                    ctx.add(w, "init", key, slots[key])
        for w, keys in enumerate(ctx.worker_keys):
            for key in keys:
                if ctx.users[key] == 1 << w:
                    ctx.add(w, "local", key, ctx.read_slots[w][key])
                else:
                    ctx.add(w, "push", key)
                    traffic.push_rows += 1
        for key in ctx.order:
            mask = ctx.users[key]
            private = mask & (mask - 1) == 0
            keep = mask if private else 0
            table.set_owner(key, mask.bit_length() - 1 if private else -1)
            holders = table.holders(key) & ~keep
            for w in range(n):
                if (holders >> w) & 1:
                    dirs[w].remove(key)
                    table.remove_holder(key, w)
                    ctx.add(w, "drop", key)
            table.version[key] = table.version.get(key, 0) + 1
            table.touch(key)
        for w, keys in enumerate(ctx.worker_keys):
            d = dirs[w]
            for key in keys:
                if ctx.users[key] == 1 << w:
                    d.touch(key, ctx.step, ctx.read_slots[w][key]).dirty = True
                    table.add_holder(key, w)
            for key, entry in d.evict_to_capacity():
                table.remove_holder(key, w)
                if entry.slot >= 0:
                    ctx.add(w, "drop", key)
                if entry.dirty:
                    slot = entry.slot if entry.slot >= 0 else entry.staging
                    ctx.add(w, "writeback", key, slot)
                    traffic.flush_rows += 1
                    table.set_owner(key, -1)
            for key, src, dst in d.assign_pending():
                ctx.add(w, "install", key, src, dst)
