"""export_for_serving: a SavedModel that plain TensorFlow serves without herald_tf."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from examples.ctr.models import MODELS
from herald_tf import InitializerConfig, OptimizerConfig, _core
from herald_tf.keras.export import export_for_serving

FIELDS, DENSE = 4, 3

SERVE = """
import sys, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
out = model.signatures["serving_default"](categorical=tf.constant(data["keys"]),
                                          dense=tf.constant(data["dense"]))
assert not any(m == "herald_tf" or m.startswith("herald_tf.") for m in sys.modules), "imported"
maps = open("/proc/self/maps").read()
assert "_herald_ops" not in maps and "libherald_core" not in maps, "op library loaded"
np.save(sys.argv[3], list(out.values())[0].numpy())
"""


def _data(n: int, seed: int, offset: int = 0):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 30, size=(n, FIELDS)) + offset
    keys = (np.arange(FIELDS, dtype=np.int64) << 32) | values.astype(np.int64)
    dense = rng.normal(size=(n, DENSE)).astype(np.float32)
    return keys, dense, (values[:, 0] % 2).astype(np.float32)


@functools.cache  # shared by the tests, which do not change it
def _trained(name: str):
    kwargs = {"hidden": (8,)} if name == "wdl" else {"bottom": (8,), "top": (8,)}
    model = MODELS[name](FIELDS, DENSE, 4, 500, OptimizerConfig("adagrad", learning_rate=0.1),
                         **kwargs)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    keys, dense, labels = _data(256, 0)
    model.fit({"categorical": keys, "dense": dense}, labels, batch_size=32, epochs=2, verbose=0)
    return model


def _serve(tmp_path, path: str, keys: np.ndarray, dense: np.ndarray) -> np.ndarray:
    np.savez(tmp_path / "in.npz", keys=keys, dense=dense)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    subprocess.run([sys.executable, "-c", SERVE, path, str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npy")], check=True, env=env, cwd=str(tmp_path))
    return np.load(tmp_path / "out.npy")


@pytest.mark.parametrize("name", ["wdl", "dlrm"])
def test_plain_tensorflow_serves_the_trained_model(tmp_path, name: str) -> None:
    model = _trained(name)
    keys, dense, _ = _data(64, 1)
    keys[:16, 2] += 1000  # unseen keys: their deterministic initial value
    expected = model.predict({"categorical": keys, "dense": dense}, verbose=0)
    path = str(tmp_path / "saved")
    export_for_serving(model, path, block_rows=16)  # ~120 rows a table: several slices
    np.testing.assert_allclose(_serve(tmp_path, path, keys, dense), expected, rtol=1e-6,
                               atol=1e-7)


@pytest.mark.parametrize("default", ["zeros", "initial"])
def test_unseen_keys_read_the_documented_default(default: str) -> None:
    import tensorflow as tf

    from herald_tf import TableConfig
    from herald_tf.keras.export import ServingTable

    config = TableConfig("t", 4, seed=9)
    trained = np.array([5, 1, 3], np.int64)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = ServingTable(trained, rows, config, "none", default)
    asked = np.array([3, 7, 5], np.int64)
    out = table.rows(tf.constant(asked)).numpy()
    np.testing.assert_array_equal(out[0], rows[2])
    np.testing.assert_array_equal(out[2], rows[0])
    unseen = (np.zeros(4) if default == "zeros"
              else _core.init_rows(InitializerConfig(), 9, np.array([7]), 4)[0])
    np.testing.assert_array_equal(out[1], unseen)


def test_export_holds_trained_rows_not_cache_storage(tmp_path) -> None:
    model = _trained("wdl")
    path = str(tmp_path / "saved")
    export_for_serving(model, path)
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    emb = model.get_layer("deep_embedding")
    sizes = sorted(int(tf.size(t.keys)) for t in loaded.tables)
    assert sizes == [int(emb.rows_used.numpy())] * 2


def _keras_export_delegates() -> bool:
    from herald_tf.keras import HeraldModel

    return HeraldModel.export is not keras.Model.export


@pytest.mark.parametrize("via", [
    "export_model",
    pytest.param("model.export", marks=pytest.mark.skipif(
        not _keras_export_delegates(), reason="HeraldModel.export does not delegate yet")),
])
def test_keras_export_writes_the_plain_tensorflow_savedmodel(tmp_path, capsys, via: str) -> None:
    from herald_tf.keras.export import export_model

    model = _trained("dlrm")
    keys, dense, _ = _data(32, 2)
    expected = model.predict({"categorical": keys, "dense": dense}, verbose=0)
    path = str(tmp_path / "saved")
    if via == "model.export":
        model.export(path, block_rows=16)
    else:
        export_model(model, path, block_rows=16)
    assert "serving_default" in capsys.readouterr().out
    np.testing.assert_allclose(_serve(tmp_path, path, keys, dense), expected, rtol=1e-6,
                               atol=1e-7)
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # Keras' endpoint name
    served = loaded.serve({"categorical": keys, "dense": dense})
    np.testing.assert_allclose(served.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_layers_trained_on_parameter_servers_need_a_checkpoint(tmp_path) -> None:
    model = _trained("wdl")
    layer = model.get_layer("deep_embedding")
    layer.mode = "ps"  # as a layer built by a runtime reports
    try:
        with pytest.raises(ValueError, match="Expected checkpoint_dir="):
            export_for_serving(model, str(tmp_path / "saved"))
    finally:
        layer.mode = "local"
