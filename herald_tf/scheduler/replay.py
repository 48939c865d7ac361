"""Replays scheduled plans against a model of the PS and the worker caches holding versions.

Independent of how plans are made: it only executes them and checks the contract of DESIGN §2
(exact synchronous SGD). Every row has a true version (updates that exact training applied so
far). For every step it asserts that flushes and write-backs carry the latest version, that every
read sees the latest version, that every gradient is applied exactly once (one local update by
the sole user, or one PS update with the gradients of all users), that slots are consistent and
that no worker holds more than ``cache_capacity`` rows between steps. Used by the property tests
and useful to debug a runtime's plan execution.
"""

from __future__ import annotations

import numpy as np

from herald_tf.scheduler.types import ScheduledStep, SchedulerConfig, SchedulerError

GARBAGE = -1  # a copy updated with only part of the step's gradients (het replicas)


class ConsistencyError(SchedulerError):
    """A plan breaks exact synchronous SGD (a stale read, a lost or doubled update, ...)."""


class ReplayModel:
    """The PS and the caches as versions; :meth:`apply` checks one scheduled step."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.truth: dict[int, int] = {}
        self.ps: dict[int, int] = {}
        self.held: list[dict[int, tuple[int, int]]] = [{} for _ in range(config.num_workers)]

    def _fail(self, step: int, worker: int, what: str) -> None:
        raise ConsistencyError(f"step {step}, worker {worker}: {what}")

    def apply(self, batch: np.ndarray, scheduled: ScheduledStep) -> None:
        """Executes ``scheduled`` (plans required) for the global ``batch`` and checks it."""
        cfg, t = self.config, scheduled.step
        n = cfg.num_workers
        perm = np.sort(scheduled.samples.ravel())
        if scheduled.samples.shape != (n, cfg.batch_size) or not np.array_equal(
            perm, np.arange(cfg.global_batch)
        ):
            self._fail(t, -1, "samples are not a permutation with B per worker")
        plans = scheduled.plans
        if plans is None:
            raise ValueError("Expected plans. Received: plans=None")
        staging: list[dict[int, int]] = [{} for _ in range(n)]
        users: dict[int, int] = {}
        for w in range(n):
            for key in batch[scheduled.samples[w]].ravel().tolist():
                users[key] = users.get(key, 0) | (1 << w)
        for w, p in enumerate(plans):
            for key, slot in zip(p.flush_keys.tolist(), p.flush_slots.tolist(), strict=True):
                version, held_slot = self.held[w].get(key, (None, None))
                if version != self.truth.get(key, 0) or held_slot != slot:
                    self._fail(t, w, f"flush of key {key} is stale or from a wrong slot")
                self.ps[key] = version
        for w, p in enumerate(plans):
            pulls = zip(p.pull_keys.tolist(), p.pull_slots.tolist(), p.pull_versions.tolist(),
                        strict=True)
            for key, slot, wanted in pulls:
                version = self.ps.get(key, 0)
                if wanted != version:
                    self._fail(t, w, f"pull of key {key} waits for version {wanted}, "
                               f"the PS has {version}")
                if key in self.held[w]:
                    if self.held[w][key][1] != slot:
                        self._fail(t, w, f"pull of held key {key} into a wrong slot")
                    self.held[w][key] = (version, slot)
                else:
                    staging[w][key] = version
            for key in p.init_keys.tolist():
                if self.truth.get(key, 0) != 0:
                    self._fail(t, w, f"key {key} initialised but it was updated before")
                staging[w][key] = 0
            expected = set(batch[scheduled.samples[w]].ravel().tolist())
            if set(p.keys.tolist()) != expected or len(p.keys) != len(expected):
                self._fail(t, w, "plan keys differ from the keys the worker reads")
            slots = p.key_slots.tolist()
            if len(set(slots)) != len(slots):
                self._fail(t, w, "two keys read at one slot")
            for key, slot in zip(p.keys.tolist(), slots, strict=True):
                if key in self.held[w]:
                    version, held_slot = self.held[w][key]
                    if slot != held_slot:
                        self._fail(t, w, f"key {key} read at slot {slot}, held at {held_slot}")
                elif key in staging[w]:
                    version = staging[w][key]
                    if slot < cfg.cache_capacity:
                        self._fail(t, w, f"staged key {key} read at cache slot {slot}")
                else:
                    self._fail(t, w, f"key {key} read but neither held, pulled nor initialised")
                if version != self.truth.get(key, 0):
                    self._fail(t, w, f"stale read of key {key}: version {version}, "
                               f"latest {self.truth.get(key, 0)}")
        for w, p in enumerate(plans):
            self._check_slots(t, w, p, batch[scheduled.samples[w]])
        local: dict[int, int] = {}
        pushed: dict[int, int] = {}
        for w, p in enumerate(plans):
            for key in p.local_keys.tolist():
                local[key] = local.get(key, 0) | (1 << w)
            for key in p.push_keys.tolist():
                if (pushed.get(key, 0) >> w) & 1:
                    self._fail(t, w, f"gradient of key {key} pushed twice")
                pushed[key] = pushed.get(key, 0) | (1 << w)
        for key, mask in users.items():
            latest = self.truth.get(key, 0)
            pmask, lmask = pushed.get(key, 0), local.get(key, 0)
            if pmask not in (0, mask) or lmask & ~mask:
                self._fail(t, -1, f"key {key}: gradients pushed/applied by non-users")
            if pmask == 0 and not (lmask == mask and mask & (mask - 1) == 0):
                self._fail(t, -1, f"key {key}: gradient not applied exactly once")
            if pmask:
                if self.ps.get(key, 0) != latest:
                    self._fail(t, -1, f"key {key}: PS applies to a stale row")
                self.ps[key] = latest + 1
            for w in range(n):
                if (lmask >> w) & 1:
                    value = latest + 1 if mask == 1 << w else GARBAGE
                    if key in self.held[w]:
                        self.held[w][key] = (value, self.held[w][key][1])
                    else:
                        staging[w][key] = value
            self.truth[key] = latest + 1
        for w, p in enumerate(plans):
            for key in p.writeback_keys.tolist():
                version = self.held[w][key][0] if key in self.held[w] else staging[w].get(key)
                if version != self.truth.get(key, 0):
                    self._fail(t, w, f"write-back of key {key} is stale")
                self.ps[key] = version
            for key in p.drop_keys.tolist():
                if self.held[w].pop(key, None) is None:
                    self._fail(t, w, f"dropped key {key} was not held")
            for key, dst in zip(p.install_keys.tolist(), p.install_dst.tolist(), strict=True):
                if key not in staging[w] or key in self.held[w]:
                    self._fail(t, w, f"installed key {key} was not staged")
                self.held[w][key] = (staging[w][key], dst)
            held_slots = [s for _, s in self.held[w].values()]
            if len(held_slots) > cfg.cache_capacity or len(set(held_slots)) != len(held_slots):
                self._fail(t, w, "more rows held than the capacity, or two rows in one slot")
            if any(not 0 <= s < cfg.cache_capacity for s in held_slots):
                self._fail(t, w, "a held row outside the cache slots")

    def _check_slots(self, t: int, w: int, p: object, rows: np.ndarray) -> None:
        """Every list names the slot where the key is read; occurrences gather those slots."""
        slot_of = dict(zip(p.keys.tolist(), p.key_slots.tolist(), strict=True))
        occurrences = [slot_of.get(k, -1) for k in rows.ravel().tolist()]
        if p.slots.shape != rows.shape or p.slots.ravel().tolist() != occurrences:
            self._fail(t, w, "occurrence slots differ from the keys' read slots")
        for name in ("pull", "init", "local"):
            keys = getattr(p, f"{name}_keys").tolist()
            slots = getattr(p, f"{name}_slots").tolist()
            if any(slot_of.get(k) != s for k, s in zip(keys, slots, strict=True)):
                self._fail(t, w, f"a {name} slot differs from the key's read slot")
        srcs = zip(p.install_keys.tolist(), p.install_src.tolist(), strict=True)
        if any(slot_of.get(k) != s for k, s in srcs):
            self._fail(t, w, "an install copies from a slot the key was not read at")

    def check_final(self) -> None:
        """Every row's latest version is on the PS or held by a worker (nothing was lost)."""
        for key, latest in self.truth.items():
            if self.ps.get(key, 0) == latest:
                continue
            if not any(h.get(key, (None,))[0] == latest for h in self.held):
                raise ConsistencyError(f"key {key}: the latest version {latest} was lost")
