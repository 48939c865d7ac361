"""The bytes of one worker's scheduled step, as worker 0 sends them to that worker.

When one process schedules for all workers (``plan_source="rank0"`` in the runtime), each other
worker receives its samples and its ``StepPlan`` of every step as one blob: a header of int64
fields (magic, step, rank, configuration digest, batch checksum, fields, array lengths), then
the int64 arrays (keys and versions), then the int32 arrays (slots and sample indices, which the
configuration bounds below 2^30, see ``SchedulerConfig``). Decoding checks everything the header
names, so a worker never trains on a plan made for another step, rank, configuration or batch.
"""

from __future__ import annotations

import hashlib

import numpy as np

from herald_tf.scheduler.types import SchedulerConfig, SchedulerError, StepPlan

#: Steps worker 0 schedules ahead when it ships plans, and the most plans a worker takes at once
#: (one round trip to the PS per PLAN_WINDOW steps instead of one per step).
PLAN_WINDOW = 8

_MAGIC = int.from_bytes(b"HRLDPLN1", "little")
#: StepPlan arrays sent as int64 (keys, versions) and as int32 (slots), in wire order.
_WIDE = ("keys", "flush_keys", "pull_keys", "pull_versions", "init_keys", "local_keys",
         "push_keys", "drop_keys", "writeback_keys", "install_keys")
_NARROW = ("key_slots", "slots", "flush_slots", "pull_slots", "init_slots", "local_slots",
           "writeback_slots", "install_src", "install_dst")
_HEADER = 6 + len(_WIDE) + len(_NARROW) + 1  # fixed fields, lengths, samples length


class PlanDecodeError(SchedulerError):
    """A received plan is malformed or was made for another step, rank, configuration or batch."""


def config_digest(config: SchedulerConfig) -> int:
    """A 63-bit digest of everything in ``config`` that shapes the plans (sender and receiver
    must agree)."""
    return int.from_bytes(hashlib.blake2b(repr(config).encode(), digest_size=8).digest(),
                          "little") >> 1


def batch_checksum(keys: np.ndarray) -> int:
    """A cheap checksum of a global batch's keys (the int64 sum, wrapping), so that a worker
    whose data differs from worker 0's is stopped instead of training on the wrong rows."""
    return int(np.add.reduce(keys, axis=None, dtype=np.int64))


def encode_worker_plan(step: int, rank: int, samples: np.ndarray, plan: StepPlan,
                       digest: int, checksum: int) -> bytes:
    """One worker's step as bytes: its (B,) sample indices and its plan."""
    wide = [np.asarray(getattr(plan, n)).ravel() for n in _WIDE]
    narrow = [np.asarray(getattr(plan, n)).ravel() for n in _NARROW] + [np.asarray(samples)]
    fields = plan.slots.shape[1] if plan.slots.ndim == 2 else 0
    header = np.array([_MAGIC, step, rank, digest, checksum, fields,
                       *(a.size for a in wide), *(a.size for a in narrow)], np.int64)
    return b"".join((header.tobytes(), np.concatenate(wide).astype(np.int64).tobytes(),
                     np.concatenate(narrow).astype(np.int32).tobytes()))


def decode_worker_plan(blob: bytes, step: int, rank: int, digest: int,
                       checksum: int) -> tuple[np.ndarray, StepPlan]:
    """(samples, plan) of ``blob``, after checking that it is the plan of this ``step`` and
    ``rank`` under a configuration with ``digest`` for a batch with ``checksum``; raises
    ``PlanDecodeError`` naming the first disagreement."""
    if len(blob) < 8 * _HEADER:
        raise PlanDecodeError(f"Expected a plan of at least {8 * _HEADER} bytes. Received: "
                              f"{len(blob)} bytes for step {step}, rank {rank}")
    header = np.frombuffer(blob, np.int64, _HEADER)
    magic, got_step, got_rank, got_digest, got_checksum, fields = (int(v) for v in header[:6])
    if magic != _MAGIC:
        raise PlanDecodeError(f"Expected an encoded plan. Received: {len(blob)} other bytes")
    for what, want, got in (("step", step, got_step), ("rank", rank, got_rank)):
        if want != got:
            raise PlanDecodeError(f"Expected the plan of {what} {want}. Received: {what} {got}")
    if got_digest != digest:
        raise PlanDecodeError(
            "Expected a plan made under this worker's scheduler configuration. Received: one made "
            f"under another (digest {got_digest:#x}, this worker {digest:#x}); every worker must "
            "run the same mode, batch size, cache, allocation and table")
    if got_checksum != checksum:
        raise PlanDecodeError(
            f"Expected the plan of this worker's global batch of step {step}. Received: one for "
            "a batch with other keys; every worker must read the same data in the same order")
    lengths = header[6:].tolist()
    n_wide = sum(lengths[:len(_WIDE)])
    n_narrow = sum(lengths[len(_WIDE):])
    if len(blob) != 8 * (_HEADER + n_wide) + 4 * n_narrow:
        raise PlanDecodeError(f"Expected {8 * (_HEADER + n_wide) + 4 * n_narrow} plan bytes. "
                              f"Received: {len(blob)} (step {step}, rank {rank})")
    wide = np.frombuffer(blob, np.int64, n_wide, 8 * _HEADER)
    narrow = np.frombuffer(blob, np.int32, n_narrow, 8 * (_HEADER + n_wide)).astype(np.int64)
    arrays = {}
    for names, flat, sizes in ((_WIDE, wide, lengths[:len(_WIDE)]),
                               ((*_NARROW, "samples"), narrow, lengths[len(_WIDE):])):
        offsets = np.cumsum([0, *sizes])
        for name, lo, hi in zip(names, offsets[:-1], offsets[1:], strict=True):
            arrays[name] = flat[lo:hi]
    samples = arrays.pop("samples")
    if arrays["slots"].size != samples.size * fields:
        raise PlanDecodeError(f"Expected {samples.size} x {fields} slots. Received: "
                              f"{arrays['slots'].size} (step {step}, rank {rank})")
    arrays["slots"] = arrays["slots"].reshape(samples.size, fields)
    return samples, StepPlan(**arrays)
