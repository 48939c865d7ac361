"""Serving raw string tokens: stock TF ops give the Criteo and Avazu readers' int64 keys."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from examples.ctr.models import MODELS
from herald_tf import OptimizerConfig
from herald_tf.data import avazu
from herald_tf.data.criteo import CriteoReader
from herald_tf.keras.export import avazu_keys, criteo_keys, export_for_serving

DENSE = 2

SERVE = """
import sys, numpy as np, tensorflow as tf
data = np.load(sys.argv[2])
model = tf.saved_model.load(sys.argv[1])
tokens = model.signatures["serving_default"](categorical=tf.constant(data["tokens"]),
                                             dense=tf.constant(data["dense"]))
keys = model.signatures["serving_int64_keys"](categorical=tf.constant(data["keys"]),
                                              dense=tf.constant(data["dense"]))
# The TF1 session loader (what TF Serving runs): restore op, then the signature's tensors.
with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], sys.argv[1])
    sig = meta.signature_def["serving_default"]
    feed = {sig.inputs["categorical"].name: data["tokens"], sig.inputs["dense"].name: data["dense"]}
    session_out = session.run(list(sig.outputs.values())[0].name, feed)
assert not any(m == "herald_tf" or m.startswith("herald_tf.") for m in sys.modules), "imported"
maps = open("/proc/self/maps").read()
assert "_herald_ops" not in maps and "libherald_core" not in maps, "op library loaded"
np.savez(sys.argv[3], tokens=list(tokens.values())[0].numpy(), keys=list(keys.values())[0].numpy(),
         session=session_out)
"""


def _criteo(tmp_path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (n, 26) of a Criteo TSV written here (empty, one-digit and upper-case values
    included) and the CriteoReader's keys of that file."""
    rng = np.random.default_rng(seed)
    values = rng.zipf(1.5, size=(n, 26)) % 1000 * 0x10001
    tokens = np.array([[format(int(v), "x") for v in row] for row in values], dtype=object)
    tokens[::3, 0] = ""
    tokens[:, 3] = ""
    tokens[1::2, 5] = [t.upper() for t in tokens[1::2, 5]]
    path = tmp_path / f"criteo{seed}.tsv"
    path.write_text("".join("\t".join(["1", *["7"] * 13, *row]) + "\n" for row in tokens))
    keys = np.concatenate([b.keys for b in CriteoReader(path, strict=True)])
    return tokens.astype(bytes), keys


def _avazu(tmp_path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (n, 22) of a synthetic Avazu CSV (a few values emptied) and its reader's keys."""
    path = tmp_path / f"avazu{seed}.csv"
    avazu.write_synthetic_avazu(path, n, seed=seed)
    header, *lines = path.read_text().splitlines()
    rows = [line.split(",") for line in lines]
    for row in rows[::4]:
        row[7] = row[12] = ""  # empty site_domain and device_id: hashed like any value
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    keys = np.concatenate([b.keys for b in avazu.AvazuReader(path, strict=True)])
    return np.array([r[2:] for r in rows], dtype=bytes), keys


def test_criteo_tokens_give_the_reader_keys(tmp_path) -> None:
    tokens, keys = _criteo(tmp_path, 64, 0)
    np.testing.assert_array_equal(criteo_keys(tf.constant(tokens)).numpy(), keys)


def test_avazu_tokens_give_the_reader_keys(tmp_path) -> None:
    tokens, keys = _avazu(tmp_path, 64, 0)
    np.testing.assert_array_equal(avazu_keys(tf.constant(tokens)).numpy(), keys)


@pytest.mark.parametrize("fmt,token", [("criteo", "123456789"), ("criteo", "12g4"),
                                       ("avazu", "14103024"), ("avazu", "1410a100"),
                                       ("avazu", "15022900")])
def test_tokens_the_reader_skips_fail_the_request(fmt: str, token: str) -> None:
    if fmt == "criteo":
        tokens, parse = tf.constant([["a1", token]]), criteo_keys
    else:
        tokens, parse = tf.constant([[token] + ["x"] * 21]), avazu_keys
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected"):
        parse(tokens)


def _trained(fields: int, keys: np.ndarray):
    model = MODELS["wdl"](fields, DENSE, 2, 4000, OptimizerConfig("adagrad", learning_rate=0.1),
                          hidden=(8,))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")
    rng = np.random.default_rng(1)
    dense = rng.normal(size=(len(keys), DENSE)).astype(np.float32)
    model.fit({"categorical": keys, "dense": dense}, (keys[:, 1] % 2).astype(np.float32),
              batch_size=32, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("fmt", ["criteo", "avazu"])
def test_plain_tensorflow_serves_raw_tokens_as_the_reader_keys(tmp_path, fmt: str) -> None:
    make = _criteo if fmt == "criteo" else _avazu
    _, train_keys = make(tmp_path, 128, 1)
    tokens, keys = make(tmp_path, 48, 2)  # held out: some keys unseen
    model = _trained(keys.shape[1], train_keys)
    dense = np.random.default_rng(3).normal(size=(len(keys), DENSE)).astype(np.float32)
    expected = model.predict({"categorical": keys, "dense": dense}, verbose=0)
    path = str(tmp_path / "saved")
    export_for_serving(model, path, string_keys={"categorical": fmt}, block_rows=64)
    np.savez(tmp_path / "in.npz", tokens=tokens, keys=keys, dense=dense)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    subprocess.run([sys.executable, "-c", SERVE, path, str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], check=True, env=env, cwd=str(tmp_path))
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["tokens"], out["keys"])
    # The session runs the graph through other optimisations: rounding-level differences.
    np.testing.assert_allclose(out["session"], out["tokens"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["keys"], expected, rtol=1e-6, atol=1e-7)


def test_string_keys_name_a_dict_input() -> None:
    model = _trained(4, (np.arange(4, dtype=np.int64) << 32) | np.arange(64)[:, None])
    with pytest.raises(ValueError, match="Expected string_keys"):
        export_for_serving(model, "/nonexistent", string_keys={"keys": "criteo"})
    with pytest.raises(ValueError, match="Expected string_keys formats"):
        export_for_serving(model, "/nonexistent", string_keys={"categorical": "csv"})
