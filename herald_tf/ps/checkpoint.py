"""Checkpoint files of parameter-server shards: atomic writes, a manifest, re-sharding restore.

Layout under a checkpoint directory (shared by the shards, e.g. a network file system)::

    step-0000000042/shard-00000-of-00002.npz   one per shard: every row of every table
    step-0000000042/manifest.json              written last; a step without it is incomplete

A shard file is an uncompressed ``.npz`` with, per table i, ``t{i}.keys`` (n,) int64,
``t{i}.values`` (n, dim) float32, ``t{i}.state`` (n, state_width) float32, ``t{i}.versions``
(n,) int64, and ``meta`` (JSON: format, step, shard index and count, num_workers, table configs).
Every file is written to a temporary name in the same directory, fsynced, then renamed, so a
reader never sees a partial file. The manifest lists the tables, the shard count, the step and
the shard files; it is written by ``commit`` after every shard reported its file.

Restore works onto any shard count: a shard keeps the rows whose ``shard_of(key, S_new)`` is its
index, reading only its own file when the count is unchanged and every file otherwise.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

import numpy as np

from herald_tf.config import TableConfig
from herald_tf.data._atomic import fsync_path
from herald_tf.ps.errors import FailedPreconditionError, NotFoundError
from herald_tf.ps.sharding import shard_of
from herald_tf.ps.store import ShardStore

FORMAT = 1
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{10})$")


def step_dir(directory: str, step: int) -> str:
    """The folder of one checkpoint."""
    return os.path.join(directory, f"step-{step:010d}")


def shard_file(shard_index: int, num_shards: int) -> str:
    """File name of one shard inside a step folder."""
    return f"shard-{shard_index:05d}-of-{num_shards:05d}.npz"


def atomic_write(path: str, write: Any) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(folder)  # the rename itself


def write_shard(store: ShardStore, directory: str, step: int,
                timeout: float | None = None) -> str:
    """Writes this shard's rows as of ``step`` atomically; returns the file name."""
    snap = store.snapshot(step, timeout)
    folder = step_dir(directory, step)
    os.makedirs(folder, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    configs = []
    for i, (_, (cfg, rows)) in enumerate(sorted(snap["tables"].items())):
        configs.append(cfg.to_dict())
        for k, v in rows.items():
            arrays[f"t{i}.{k}"] = v
    meta = {"format": FORMAT, "step": step, "shard_index": store.shard_index,
            "num_shards": store.num_shards, "num_workers": snap["num_workers"],
            "tables": configs}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    name = shard_file(store.shard_index, store.num_shards)
    atomic_write(os.path.join(folder, name), lambda f: np.savez(f, **arrays))
    return name


def commit(directory: str, step: int, num_shards: int, tables: list[dict[str, Any]],
           num_workers: int | None) -> str:
    """Writes the manifest once every shard file of ``step`` exists; returns its path."""
    folder = step_dir(directory, step)
    files = [shard_file(i, num_shards) for i in range(num_shards)]
    missing = [f for f in files if not os.path.exists(os.path.join(folder, f))]
    if missing:
        raise FailedPreconditionError(
            f"Expected every shard file of step {step} before the manifest. Missing: {missing}")
    manifest = {"format": FORMAT, "step": step, "num_shards": num_shards,
                "num_workers": num_workers, "tables": tables, "files": files}
    path = os.path.join(folder, MANIFEST)
    atomic_write(path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    return path


def latest_step(directory: str) -> int | None:
    """The newest step with a manifest (a complete checkpoint), or None."""
    if not os.path.isdir(directory):
        return None
    steps = []
    for entry in os.listdir(directory):
        m = _STEP_DIR.match(entry)
        if m and os.path.exists(os.path.join(directory, entry, MANIFEST)):
            steps.append(int(m.group(1)))
    return max(steps) if steps else None


def read_manifest(directory: str, step: int | None = None) -> dict[str, Any]:
    """The manifest of ``step`` (default: the latest complete one)."""
    if step is None:
        step = latest_step(directory)
        if step is None:
            raise NotFoundError(f"Expected a complete checkpoint under {directory}. Found none.")
    path = os.path.join(step_dir(directory, step), MANIFEST)
    if not os.path.exists(path):
        raise NotFoundError(f"Expected a checkpoint manifest at {path}. Found none.")
    with open(path, "rb") as f:
        return json.load(f)


def restore(store: ShardStore, directory: str, step: int | None = None) -> int:
    """Replaces ``store``'s state by its rows of a checkpoint (any shard count); returns step."""
    manifest = read_manifest(directory, step)
    step = int(manifest["step"])
    folder = step_dir(directory, step)
    configs = {d["name"]: TableConfig.from_dict(d) for d in manifest["tables"]}
    same = manifest["num_shards"] == store.num_shards
    files = [manifest["files"][store.shard_index]] if same else manifest["files"]
    parts: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in configs}
    for fname in files:
        with np.load(os.path.join(folder, fname)) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta["step"] != step:
                raise FailedPreconditionError(
                    f"Expected {fname} to hold step {step}. Received: step {meta['step']}")
            for i, cfg in enumerate(meta["tables"]):
                rows = {k: data[f"t{i}.{k}"] for k in ("keys", "values", "state", "versions")}
                if not same:
                    mine = shard_of(rows["keys"], store.num_shards) == store.shard_index
                    rows = {k: v[mine] for k, v in rows.items()}
                parts[cfg["name"]].append(rows)
    tables = {}
    for name, cfg in configs.items():
        chunks = parts[name]
        width = cfg.state_width
        if chunks:
            rows = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        else:
            rows = {"keys": np.empty(0, np.int64),
                    "values": np.empty((0, cfg.dim), np.float32),
                    "state": np.empty((0, width), np.float32),
                    "versions": np.empty(0, np.int64)}
        tables[name] = (cfg, rows)
    store.replace(step, tables, manifest.get("num_workers"))
    return step
