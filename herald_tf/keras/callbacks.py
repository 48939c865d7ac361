"""Keras callbacks of herald's distributed training: metrics of DESIGN §6 per epoch.

``HeraldMetrics`` adds to each epoch's logs (so the progress bar, History and TensorBoard get
them) the samples per second, the step-time split, the embedding bytes moved per sample by
kind, the rows moved per step, the cache hit ratio and the scheduling CPU per step (DESIGN §6
"scheduler time per global batch") of this worker's ``WorkerRuntime``; in
``het`` mode also the staleness of its reads (``herald_tf/keras/staleness.py``): the largest so
far, in updates behind the PS (at most ``bound``), and the epoch's fraction of stale reads.
"""

from __future__ import annotations

import time
from typing import Any

import tensorflow as tf

from herald_tf.keras.compat import keras
from herald_tf.keras.runtime import WorkerRuntime


class HeraldMetrics(keras.callbacks.Callback):
    """Per-epoch embedding traffic and time split of one worker.

    Args:
        runtime: the worker's runtime.
        global_batch: samples per step over all workers (N * B), for samples/s.
        log_dir: if set, the metrics also go to TensorBoard under ``log_dir/herald``.
        print_fn: where the one-line summary goes (``None``: not printed).
    """

    def __init__(self, runtime: WorkerRuntime, global_batch: int, log_dir: str | None = None,
                 print_fn: Any = print) -> None:
        super().__init__()
        self.runtime = runtime
        self.global_batch = global_batch
        self.print_fn = print_fn
        self._writer = tf.summary.create_file_writer(f"{log_dir}/herald") if log_dir else None
        self._start = 0.0
        self._before: dict[str, Any] = {}

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._before = self.runtime.stats()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        elapsed = time.perf_counter() - self._start
        now = self.runtime.stats()
        steps = max(now["steps"] - self._before["steps"], 1)
        samples = steps * self.runtime.config.batch_size
        comm = now["embedding_comm_s"] - self._before["embedding_comm_s"]
        local = now["local_apply_s"] - self._before["local_apply_s"]
        metrics = {
            "samples_per_s": steps * self.global_batch / max(elapsed, 1e-9),
            "time_embedding_comm_s": comm,
            "time_local_apply_s": local,
            "time_compute_and_dense_sync_s": max(elapsed - comm - local, 0.0),
            "cache_hit_ratio": now["cache_hit_ratio"],
            "scheduler_cpu_ms_per_step": 1e3 * (now["scheduler_cpu_s"]
                                                - self._before["scheduler_cpu_s"]) / steps,
        }
        if "staleness" in now:
            stale, before = now["staleness"], self._before["staleness"]
            metrics["staleness_max"] = stale["max"]
            metrics["stale_read_ratio"] = ((stale["stale_reads"] - before["stale_reads"])
                                           / max(stale["reads"] - before["reads"], 1))
            metrics["time_staleness_measure_s"] = stale["seconds"] - before["seconds"]
        for kind, total in now["bytes"].items():
            metrics[f"bytes_per_sample_{kind}"] = (total - self._before["bytes"].get(kind, 0)
                                                   ) / samples
        for kind, total in now["rows"].items():
            metrics[f"rows_per_step_{kind}"] = (total - self._before["rows"].get(kind, 0)) / steps
        logs.update(metrics)
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                for name, value in metrics.items():
                    tf.summary.scalar(name, value)
            self._writer.flush()
        if self.print_fn is not None:
            emb_bytes = sum(v for k, v in metrics.items() if k.startswith("bytes_per_sample_"))
            self.print_fn(
                f"epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}  "
                f"{metrics['samples_per_s']:,.0f} samples/s  "
                f"time: embedding comm {comm:.2f}s, local apply {local:.2f}s, "
                f"compute+dense sync {metrics['time_compute_and_dense_sync_s']:.2f}s  "
                f"embedding bytes/sample {emb_bytes:,.0f} ("
                + ", ".join(f"{k[17:]} {v:,.0f}" for k, v in metrics.items()
                            if k.startswith("bytes_per_sample_") and v)
                + f")  cache hit {metrics['cache_hit_ratio']:.3f}"
                + f"  scheduler {metrics['scheduler_cpu_ms_per_step']:.2f} ms CPU/step"
                + (f"  staleness max {metrics['staleness_max']} (stale reads "
                   f"{metrics['stale_read_ratio']:.3f}, measured in "
                   f"{metrics['time_staleness_measure_s']:.2f}s)"
                   if "staleness_max" in metrics else "")
            )
