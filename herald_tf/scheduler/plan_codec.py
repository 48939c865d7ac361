"""The bytes of one worker's scheduled step, as worker 0 sends them to that worker.

When one process schedules for all workers (``plan_source="rank0"`` in the runtime), each other
worker receives its samples and its ``StepPlan`` of every step as one blob, encoded by the C++
engine from its lists (``NativeEngine.encode_plan``; kernels/scheduler/plan_wire.cc) and decoded
by the library too (``decode_worker_plan``). The blob is compact, because it travels to the PS
and back every step: by the slot model (``types``), a key read at a step has one slot,
``key_slots[i]`` of ``keys[i]``, and the rows a step pulls, initialises, applies locally or
installs are rows it reads. So those lists travel as positions into ``keys`` (uint16 when the
step reads fewer than 65,536 keys), and the per-occurrence ``slots`` as the position of each
occurrence's key; ``push_keys`` is not sent when it is every key read but the local ones
(``herald``, ``ps``). The encoder checks both facts for every list it shortens.

Layout (little-endian): 23 int64 header fields (magic ``HRLDPLN2``, step, rank, configuration
digest, batch checksum, fields, flags, then the sizes of the arrays below), the int64 arrays
(keys, flush keys, drop keys, write-back keys, pull versions, push keys), the int32 arrays (key
slots, flush slots, write-back slots, install destinations, sample indices; the configuration
bounds them below 2^31) and the positions (occurrences, pulls, inits, locals, installs).
Decoding checks everything the header names, so a worker never trains on a plan made for
another step, rank, configuration or batch.
"""

from __future__ import annotations

import hashlib

import numpy as np

from herald_tf.errors import InvalidArgumentError
from herald_tf.scheduler import _native
from herald_tf.scheduler.types import SchedulerConfig, SchedulerError, StepPlan

#: Steps worker 0 schedules ahead when it ships plans, and the most plans a worker takes at once
#: (one round trip to the PS per PLAN_WINDOW steps instead of one per step).
PLAN_WINDOW = 8


class PlanDecodeError(SchedulerError):
    """A received plan is malformed or was made for another step, rank, configuration or batch."""


def config_digest(config: SchedulerConfig) -> int:
    """A 63-bit digest of everything in ``config`` that shapes the plans (sender and receiver
    must agree)."""
    return int.from_bytes(hashlib.blake2b(repr(config).encode(), digest_size=8).digest(),
                          "little") >> 1


def batch_checksum(keys: np.ndarray) -> int:
    """A checksum of a global batch's keys, so that a worker whose data differs from worker 0's
    is stopped instead of training on the wrong rows.

    Order matters: a worker whose batch holds the same keys in another order would take its
    dense features and labels at worker 0's sample indices while reading the slots planned for
    worker 0's keys, so a plain sum (the same for every order) is not enough. Computed by the
    scheduler library (``herald_plan_batch_checksum``: mixed keys weighted by position, summed
    modulo 2**64, the shape folded in), since every worker computes it on every step: about
    0.05 ms for 2048 x 26 keys here, where numpy took 0.1 ms and SHA-256 0.33 ms.
    """
    return _native.batch_checksum(keys)


def decode_worker_plan(blob: bytes, step: int, rank: int, digest: int,
                       checksum: int) -> tuple[np.ndarray, StepPlan]:
    """(samples, plan) of ``blob``, after checking that it is the plan of this ``step`` and
    ``rank`` under a configuration with ``digest`` for a batch with ``checksum``; raises
    ``PlanDecodeError`` naming the first disagreement."""
    try:
        return _native.decode_plan(blob, step, rank, digest, checksum)
    except InvalidArgumentError as e:
        raise PlanDecodeError(str(e)) from None
