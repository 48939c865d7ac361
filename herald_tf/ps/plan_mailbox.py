"""Per-step plans that one worker scheduled for the others, held by a PS shard until taken.

With ``plan_source="rank0"`` (``herald_tf.keras.runtime``) worker 0 runs the scheduler for every
worker and posts each other worker's encoded plan of step t to shard ``(t // PLAN_WINDOW) % S``;
that worker takes it, with the plans of the next steps already posted, before training step t.

The mailbox only stores opaque bytes: the plan format and its checks live in
``herald_tf.scheduler.plan_codec``. Posting a (step, rank) again replaces the entry (a restarted
worker 0 re-posts identical plans), so a post may be retried; a take leaves the plans in place,
so a take may be retried too. Taking step t for a rank discards that rank's plans of earlier
steps (a worker takes in step order), so a PS serving a long run holds only the plans of the
look-ahead window plus a few per rank; the mailbox is also bounded in bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import ResourceExhaustedError

#: Bytes of plans one shard holds at most (a step's plans are a few MB at B = 4096).
DEFAULT_MAX_BYTES = 1 << 30
#: Longest wait of one take at the server, so that takers never hold a server thread for long
#: (the client asks again until its own deadline).
MAX_TAKE_WAIT_S = 1.0


class PlanMailbox:
    """Opaque per-(step, rank) plan blobs of one shard; thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._plans: dict[tuple[int, int], bytes] = {}
        self._bytes = 0
        self._cond = threading.Condition()
        self.posted = 0
        self.taken = 0

    def post(self, step: int, plans: Mapping[int, bytes]) -> None:
        """Stores ``plans`` (rank → blob) of ``step``; replaces earlier posts of the same keys.

        Refused whole (nothing stored) for a negative step or rank, an empty blob, or when the
        mailbox would exceed ``max_bytes`` (``ResourceExhaustedError``: nobody takes the plans).
        """
        if step < 0:
            raise InvalidArgumentError(f"Expected a plan step >= 0. Received: step={step}")
        for rank, blob in plans.items():
            if rank < 0:
                raise InvalidArgumentError(
                    f"Expected plan ranks >= 0. Received: rank={rank} at step {step}")
            if not blob:
                raise InvalidArgumentError(
                    f"Expected a non-empty plan. Received: an empty plan for rank {rank} at step "
                    f"{step}")
        with self._cond:
            added = sum(len(b) - len(self._plans.get((step, r), b"")) for r, b in plans.items())
            if self._bytes + added > self.max_bytes:
                raise ResourceExhaustedError(
                    f"Expected the plans of step {step} to fit this PS's plan mailbox "
                    f"({self.max_bytes} bytes). Received: {added} bytes more while "
                    f"{len(self._plans)} plans ({self._bytes} bytes) wait to be taken; are the "
                    "other workers running and taking their plans?")
            for rank, blob in plans.items():
                self._plans[(step, rank)] = bytes(blob)
            self._bytes += added
            self.posted += len(plans)
            self._cond.notify_all()

    def take(self, step: int, rank: int, wait_s: float = 0.0, max_plans: int = 1) -> list[bytes]:
        """The plans of ``rank`` for ``step`` and the steps right after it that are here (at
        most ``max_plans``), waiting up to ``wait_s`` (at most ``MAX_TAKE_WAIT_S``) for the
        first to be posted; empty if it was not. Discards the rank's plans of earlier steps; the
        plans returned stay until then, so a take whose reply was lost may be repeated."""
        if step < 0 or rank < 0 or max_plans < 1:
            raise InvalidArgumentError(
                "Expected step >= 0, rank >= 0 and max_plans >= 1. Received: "
                f"step={step}, rank={rank}, max_plans={max_plans}")
        deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_TAKE_WAIT_S)
        with self._cond:
            for k in [k for k in self._plans if k[1] == rank and k[0] < step]:
                self._bytes -= len(self._plans.pop(k))
            while (step, rank) not in self._plans:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(timeout=left)
            plans = []
            while len(plans) < max_plans and (step + len(plans), rank) in self._plans:
                plans.append(self._plans[(step + len(plans), rank)])
            self.taken += len(plans)
            return plans

    def clear(self) -> None:
        """Drops every plan (the shard was restored from a checkpoint)."""
        with self._cond:
            self._plans.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Plans waiting, their bytes, and plans posted and taken so far."""
        with self._cond:
            return {"plans_waiting": len(self._plans), "plan_bytes_waiting": self._bytes,
                    "plans_posted": self.posted, "plans_taken": self.taken}
