"""Embedding scheduler: location-aware input allocation and the exact communication plan.

Free of TensorFlow. ``Scheduler`` runs ahead of training over a look-ahead window and hands out
per-step sample allocations and row-movement plans; ``ReferenceEngine`` is the slow Python
definition that the C++ engine (``NativeEngine``) matches bit for bit; ``ReplayModel`` checks
plans against exact synchronous SGD; ``plan_codec`` is the compact form in which worker 0 ships
each other worker its plans.
"""

from herald_tf.scheduler.cache_directory import CacheDirectory
from herald_tf.scheduler.reference import ReferenceEngine
from herald_tf.scheduler.replay import ConsistencyError, ReplayModel
from herald_tf.scheduler.scheduler import Scheduler, global_batches, make_engine
from herald_tf.scheduler.types import (
    Allocation,
    Eviction,
    Policy,
    ScheduledStep,
    SchedulerConfig,
    SchedulerConfigError,
    SchedulerError,
    StepPlan,
    Traffic,
)

__all__ = [
    "Allocation",
    "CacheDirectory",
    "ConsistencyError",
    "Eviction",
    "Policy",
    "ReferenceEngine",
    "ReplayModel",
    "ScheduledStep",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerConfigError",
    "SchedulerError",
    "StepPlan",
    "Traffic",
    "global_batches",
    "make_engine",
]
