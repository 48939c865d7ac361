"""Consistent checkpoints of a distributed run at a step boundary, and resume from them.

A checkpoint "at step S" holds the state after steps 0..S-1:

- the PS shards as of step S-1, written by the PS under its ``--checkpoint-dir`` with
  their manifest (the chief asks for it through ``Transport.checkpoint``; restore with
  ``herald-ps --restore S-1`` or ``Transport.restore(S - 1)``);
- per worker, in ``directory/workers/step-S/``, ``worker-<rank>.npz``: its slot storage
  (values, optimizer state, versions of cache and staging slots), the rows it owns dirty, its
  dense weights and dense optimizer state, and the step; ``worker-<rank>.json`` records the
  file's SHA-256, so a partial or corrupted file is refused with a clear error and an older
  checkpoint stays usable.

No flush-first shortcut: the caches are saved as they are. The scheduler's state (directories,
ownership, touched set) is not stored: it is a deterministic function of the batches, so the
resumed runtime re-plans steps 0..S-1 from the same data without executing them, which restores
it exactly; a resumed run is then the same computation as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from herald_tf import ops
from herald_tf.errors import HeraldError
from herald_tf.keras.compat import keras
from herald_tf.keras.runtime import WorkerRuntime
from herald_tf.ps.checkpoint import atomic_write


class CheckpointError(HeraldError):
    """A checkpoint is missing, partial or corrupted."""


def step_directory(directory: str, step: int) -> str:
    """Folder of the workers' checkpoint at ``step``."""
    return os.path.join(directory, "workers", f"step-{step:010d}")


def _dense_state(model: keras.Model, runtime: WorkerRuntime) -> list[Any]:
    herald = {id(v) for layer in runtime.tables for v in layer.weights}
    weights = [w for w in model.weights if id(w) not in herald]
    return weights + (list(model.optimizer.variables) if model.optimizer is not None else [])


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_worker(runtime: WorkerRuntime, model: keras.Model, directory: str) -> str:
    """Writes this worker's part of the checkpoint at the runtime's current step."""
    step = runtime.next_step
    folder = step_directory(directory, step)
    os.makedirs(folder, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"step": np.int64(step)}
    for i, layer in enumerate(runtime.tables):
        arrays[f"t{i}.values"] = ops.local_variable(layer.storage).numpy()
        arrays[f"t{i}.state"] = ops.local_variable(layer.optimizer_state).numpy()
        arrays[f"t{i}.versions"] = ops.local_variable(layer.versions).numpy()
    keys, slots = runtime.dirty_rows()
    arrays["dirty.keys"], arrays["dirty.slots"] = keys, slots
    for i, var in enumerate(_dense_state(model, runtime)):
        arrays[f"dense.{i}"] = np.asarray(var.numpy())
    rank = runtime.config.rank
    path = os.path.join(folder, f"worker-{rank}.npz")
    atomic_write(path, lambda f: np.savez(f, **arrays))
    record = {"step": step, "rank": rank, "sha256": _sha256(path),
              "tables": [layer.table.to_dict() for layer in runtime.tables]}
    atomic_write(os.path.join(folder, f"worker-{rank}.json"),
            lambda f: f.write(json.dumps(record).encode()))
    return path


def load_worker(runtime: WorkerRuntime, model: keras.Model, directory: str, step: int) -> None:
    """Restores this worker's storage, dirty rows, dense state and step from a checkpoint.

    Call after the model is built and compiled, before ``fit``. Raises ``CheckpointError``
    naming the file when the checkpoint is missing, partial or corrupted.
    """
    folder = step_directory(directory, step)
    rank = runtime.config.rank
    path = os.path.join(folder, f"worker-{rank}.npz")
    record_path = os.path.join(folder, f"worker-{rank}.json")
    if not os.path.exists(path) or not os.path.exists(record_path):
        missing = record_path if os.path.exists(path) else path
        raise CheckpointError(f"Expected a complete checkpoint of worker {rank} at step {step} "
                              f"in {folder}. Missing: {missing}")
    with open(record_path, "rb") as f:
        record = json.load(f)
    if record.get("sha256") != _sha256(path) or record.get("step") != step:
        raise CheckpointError(f"Checkpoint file {path} is corrupted or partial (its SHA-256 or "
                              "step does not match its record); resume from an earlier step.")
    if record["tables"] != [layer.table.to_dict() for layer in runtime.tables]:
        raise CheckpointError(f"Checkpoint {path} holds other tables than this model.")
    dense = _dense_state(model, runtime)
    with np.load(path) as data:
        for i, layer in enumerate(runtime.tables):
            for name, var in (("values", layer.storage), ("state", layer.optimizer_state),
                              ("versions", layer.versions)):
                ops.local_variable(var).assign(data[f"t{i}.{name}"])
        saved = sorted(k for k in data.files if k.startswith("dense."))
        if len(saved) != len(dense):
            raise CheckpointError(f"Checkpoint {path} holds {len(saved)} dense variables; this "
                                  f"model has {len(dense)} (build and compile it first).")
        for i, var in enumerate(dense):
            var.assign(data[f"dense.{i}"])
        runtime.resume_at(step, data["dirty.keys"], data["dirty.slots"])


class HeraldCheckpoint(keras.callbacks.Callback):
    """Writes a consistent checkpoint every ``every_steps`` steps (see the module docstring).

    Keras calls batch callbacks at the edges of ``steps_per_execution`` chunks only, so choose
    ``every_steps`` as a multiple of it.

    Args:
        runtime: the worker's runtime.
        directory: checkpoint folder shared by the workers and the PS (the PS's
            ``--checkpoint-dir``).
        every_steps: checkpoint period in steps.
        chief: whether this worker asks the PS to checkpoint (exactly one worker should).
    """

    def __init__(self, runtime: WorkerRuntime, directory: str, every_steps: int,
                 chief: bool) -> None:
        super().__init__()
        if every_steps <= 0:
            raise ValueError(f"Expected every_steps > 0. Received: {every_steps}")
        self.runtime, self.directory, self.every_steps, self.chief = (
            runtime, directory, every_steps, chief)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self.runtime.next_step
        if step % self.every_steps:
            return
        if self.chief:  # the PS as of the last applied step, S - 1
            self.runtime.transport.checkpoint(step - 1)
        save_worker(self.runtime, self.model, self.directory)
