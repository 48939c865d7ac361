"""``het``: HET's cache with bounded staleness (``bound`` b; exact synchronous SGD when b = 0).

Per worker copy: ``version`` = PS clock at pull + local updates. A read hits when the copy exists
and PS clock <= version + b; otherwise the row is pulled with its optimizer state (or initialised
if never touched). Every user applies its gradient to its own copy and pushes it once it has
max(b, 1) pending updates (the PS clock advances by the updates pushed). With b = 0 a copy stays
usable only if its worker was the row's sole user at the step (its local update equals the PS's);
a shared row is stale everywhere. Stale copies stay in the directory until evicted; evicting a
copy with pending updates pushes them (counted as a push, listed as a write-back). Pull versions
are PS versions: the PS applies one update per key and step that received pushes.
"""

from __future__ import annotations

from typing import Any

from herald_tf.scheduler.types import PlanPolicy, Traffic


class HetPolicy(PlanPolicy):
    """HET (VLDB'22) cache-enabled embedding plan, as a scheduler policy."""

    def __init__(self, bound: int) -> None:
        self.bound = bound

    def plan(self, ctx: Any, table: Any, dirs: list[Any], traffic: Traffic) -> None:
        """Plans one step; see the module docstring."""
        cfg = ctx.config
        read_version: list[dict[int, int]] = []
        for w, keys in enumerate(ctx.worker_keys):
            slots = ctx.read_slots[w]
            versions: dict[int, int] = {}
            for key in keys:
                clock = table.version.get(key, 0)
                entry = dirs[w].get(key)
                if entry is not None and clock <= entry.version + self.bound:
                    versions[key] = entry.version
                elif not table.touched(key):
                    ctx.add(w, "init", key, slots[key])
                    versions[key] = clock
                else:
                    ctx.add(w, "pull", key, slots[key], table.applied.get(key, 0))
                    traffic.pull_rows += 1
                    traffic.pull_state_rows += 1
                    versions[key] = clock
            read_version.append(versions)
        push_after = max(self.bound, 1)
        pushed: set[int] = set()
        new_state: list[dict[int, tuple[int, int]]] = [{} for _ in range(cfg.num_workers)]
        for w, keys in enumerate(ctx.worker_keys):
            for key in keys:
                ctx.add(w, "local", key, ctx.read_slots[w][key])
                entry = dirs[w].get(key)
                pending = (entry.pending_updates if entry is not None else 0) + 1
                if pending >= push_after:
                    ctx.add(w, "push", key)
                    traffic.push_rows += 1
                    pushed.add(key)
                    table.version[key] = table.version.get(key, 0) + pending
                    pending = 0
                new_state[w][key] = (read_version[w][key] + 1, pending)
        for key in ctx.order:
            table.touch(key)
        for w, keys in enumerate(ctx.worker_keys):
            d = dirs[w]
            for key in keys:
                entry = d.touch(key, ctx.step, ctx.read_slots[w][key])
                entry.version, entry.pending_updates = new_state[w][key]
                entry.dirty = entry.pending_updates > 0
                table.add_holder(key, w)
            for key, entry in d.evict_to_capacity():
                table.remove_holder(key, w)
                if entry.slot >= 0:
                    ctx.add(w, "drop", key)
                if entry.pending_updates > 0:
                    slot = entry.slot if entry.slot >= 0 else entry.staging
                    ctx.add(w, "writeback", key, slot)
                    traffic.push_rows += 1
                    pushed.add(key)
                    table.version[key] = table.version.get(key, 0) + entry.pending_updates
            for key, src, dst in d.assign_pending():
                ctx.add(w, "install", key, src, dst)
        for key in pushed:  # the PS applies one update per key and step
            table.applied[key] = table.applied.get(key, 0) + 1
