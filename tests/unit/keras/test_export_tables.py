"""Tables exported block by block: sorted in bounded memory, sliced into the SavedModel."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from herald_tf import OptimizerConfig, TableConfig
from herald_tf.keras import export_tables
from herald_tf.keras.export import ServingTable
from herald_tf.ps import checkpoint
from herald_tf.ps.sharding import shard_of
from herald_tf.ps.store import ShardStore


def _rows(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = rng.choice(1 << 40, size=n, replace=False).astype(np.int64) - (1 << 39)
    return keys, rng.normal(size=(n, dim)).astype(np.float32)


def write_checkpoint(directory: str, tables: dict[str, tuple[TableConfig, np.ndarray, np.ndarray]],
                     num_shards: int = 2, step: int = 0) -> None:
    """A PS checkpoint (the real file format) holding ``tables``' rows over ``num_shards``."""
    for s in range(num_shards):
        store = ShardStore(s, num_shards)
        content = {}
        for name, (cfg, keys, values) in tables.items():
            mine = shard_of(keys, num_shards) == s
            content[name] = (cfg, {"keys": keys[mine], "values": values[mine],
                                   "state": np.zeros((int(mine.sum()), cfg.state_width),
                                                     np.float32),
                                   "versions": np.ones(int(mine.sum()), np.int64)})
        store.replace(step, content, 1)
        checkpoint.write_shard(store, directory, step)
    checkpoint.commit(directory, step, num_shards, [c.to_dict() for c, _, _ in tables.values()],
                      1)


def _in_memory(keys: np.ndarray, values: np.ndarray, dim: int) -> export_tables.TableRows:
    def blocks(block_rows: int):
        for start in range(0, keys.size, block_rows):
            yield keys[start:start + block_rows], values[start:start + block_rows]

    return export_tables.TableRows(keys.size, dim, blocks)


@pytest.mark.parametrize("n,block_rows", [(50, 64), (300, 64), (5000, 64), (1000, 7)])
def test_sorted_blocks_sort_any_table_in_blocks(tmp_path, n: int, block_rows: int) -> None:
    # 5000 / 64 = 79 runs: more than FAN_IN, so runs are merged in two passes.
    keys, values = _rows(n, 3)
    meter = export_tables.BlockMeter()
    out = list(export_tables.sorted_blocks(_in_memory(keys, values, 3), block_rows,
                                           str(tmp_path), meter))
    assert all(len(k) == block_rows for k, _ in out[:-1]) and 0 < len(out[-1][0]) <= block_rows
    order = np.argsort(keys)
    np.testing.assert_array_equal(np.concatenate([k for k, _ in out]), keys[order])
    np.testing.assert_array_equal(np.concatenate([v for _, v in out]), values[order])
    assert meter.largest <= block_rows
    assert os.listdir(tmp_path) == []  # run files removed


def _placeholder_model(path: str, configs: list[TableConfig]) -> tf.Module:
    module = tf.Module()
    module.tables = [ServingTable(None, None, cfg, "none") for cfg in configs]
    module.dense = tf.Variable([1.5, -2.0])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)])
    def serve(keys):
        return {f"t{i}": t(keys) * module.dense[0] for i, t in enumerate(module.tables)}

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return module


def test_checkpoint_tables_written_in_small_blocks_serve_every_row(tmp_path) -> None:
    configs = [TableConfig("a", 4, seed=3), TableConfig("b", 1, seed=4),
               TableConfig("empty", 2, seed=5, optimizer=OptimizerConfig("adagrad"))]
    # "b" fits one block but comes as one block per shard file.
    data = {"a": _rows(700, 4, 1), "b": _rows(50, 1, 2),
            "empty": (np.zeros(0, np.int64), np.zeros((0, 2), np.float32))}
    write_checkpoint(str(tmp_path / "ckpt"), {c.name: (c, *data[c.name]) for c in configs})
    path = str(tmp_path / "saved")
    _placeholder_model(path, configs)
    meter = export_tables.BlockMeter()
    export_tables.write_tables(path, [
        export_tables.TableEntry(f"tables/{i}/keys/.ATTRIBUTES/VARIABLE_VALUE",
                                 f"tables/{i}/values/.ATTRIBUTES/VARIABLE_VALUE",
                                 export_tables.checkpoint_rows(str(tmp_path / "ckpt"), c.name))
        for i, c in enumerate(configs)], block_rows=64, meter=meter)
    assert meter.blocks == 11 + 1 and meter.largest <= 64
    assert sorted(os.listdir(path)) == ["assets", "fingerprint.pb", "saved_model.pb",
                                        "variables"]
    loaded = tf.saved_model.load(path)
    for i, c in enumerate(configs):
        keys, values = data[c.name]
        order = np.argsort(keys)
        np.testing.assert_array_equal(loaded.tables[i].keys.numpy(), keys[order])
        np.testing.assert_array_equal(loaded.tables[i].values.numpy(), values[order])
    out = loaded.signatures["serving_default"](tf.constant(data["a"][0][::-1]))
    np.testing.assert_array_equal(out["t0"].numpy(), data["a"][1][::-1] * 1.5)
    out = loaded.signatures["serving_default"](tf.constant(data["b"][0]))
    np.testing.assert_array_equal(out["t1"].numpy(), data["b"][1] * 1.5)


def test_repeated_key_across_shards_is_refused(tmp_path) -> None:
    cfg = TableConfig("a", 2)
    keys, values = _rows(100, 2)
    path = str(tmp_path / "saved")
    _placeholder_model(path, [cfg])
    rows = _in_memory(np.concatenate([keys, keys[:1]]), np.concatenate([values, values[:1]]), 2)
    with pytest.raises(ValueError, match="Expected unique keys"):
        export_tables.write_tables(path, [export_tables.TableEntry(
            "tables/0/keys/.ATTRIBUTES/VARIABLE_VALUE",
            "tables/0/values/.ATTRIBUTES/VARIABLE_VALUE", rows)], block_rows=16)


def _peak_bytes(tmp_path, n: int, block_rows: int, dim: int) -> tuple[int, int]:
    """Peak bytes Python and numpy allocated while one table of n rows was exported."""
    cfg = TableConfig("big", dim)
    write_checkpoint(str(tmp_path / f"ckpt{n}"), {"big": (cfg, *_rows(n, dim))})
    path = str(tmp_path / f"saved{n}")
    _placeholder_model(path, [cfg])
    entry = export_tables.TableEntry(
        "tables/0/keys/.ATTRIBUTES/VARIABLE_VALUE", "tables/0/values/.ATTRIBUTES/VARIABLE_VALUE",
        export_tables.checkpoint_rows(str(tmp_path / f"ckpt{n}"), "big"))
    meter = export_tables.BlockMeter()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        export_tables.write_tables(path, [entry], block_rows=block_rows, meter=meter)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert meter.largest <= block_rows
    loaded = tf.saved_model.load(path)
    assert int(tf.size(loaded.tables[0].keys)) == n
    return peak, meter.blocks


def test_export_memory_is_bounded_by_the_block_not_the_table(tmp_path) -> None:
    dim, block_rows = 16, 512
    block_bytes = block_rows * (8 + 4 * dim)  # 36 KiB
    small, small_blocks = _peak_bytes(tmp_path, 20_000, block_rows, dim)  # 1.4 MB table
    large, large_blocks = _peak_bytes(tmp_path, 80_000, block_rows, dim)  # 5.8 MB table
    assert (small_blocks, large_blocks) == (40, 157)
    # Every numpy buffer of the export together stays a few blocks; a 4x larger table adds
    # only bookkeeping (file names), well under 1 KB a block.
    assert small <= 8 * block_bytes, (small, block_bytes)
    assert large - small <= 1024 * (large_blocks - small_blocks), (small, large)
