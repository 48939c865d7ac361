"""Under tf-keras (``TF_USE_LEGACY_KERAS=1``) herald_tf computes what it computes under Keras 3.

The variable must be set before TensorFlow is imported, so every check runs the same script in
two fresh processes, one with it and one without, and compares their outputs (DESIGN §2a
tolerance). The 2-worker ``ps`` run trains a ``tf.keras`` (tf-keras) WDL against real PS
processes and compares it with the Keras 3 single-process reference.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from reference import assert_close

pytest.importorskip("tf_keras")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
DISTRIBUTED = os.path.join(ROOT, "tests", "distributed")
JOB = os.path.join(DISTRIBUTED, "training_job.py")
sys.path.insert(0, DISTRIBUTED)

from ps_cluster import PsCluster  # noqa: E402
from training_job import job_env, run_jobs, worker_commands  # noqa: E402

# One process per Keras: a HeraldEmbedding's forward pass and storage gradient, then an ordinary
# tf.keras model trained with fit (progress bar, a metric, two standard callbacks), evaluate and
# predict. `tf.keras` is tf-keras when TF_USE_LEGACY_KERAS=1 and Keras 3 otherwise.
SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
from herald_tf import InitializerConfig, OptimizerConfig
from herald_tf.keras import HeraldEmbedding, HeraldModel, compat, herald_embeddings

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
out_path, csv_path = sys.argv[1], sys.argv[2]
k = tf.keras
out = {"legacy": np.array(compat.LEGACY_KERAS)}
rng = np.random.default_rng(0)
init = InitializerConfig("uniform", -0.05, 0.05)

# The layer alone: forward (training creates rows; inference reads unseen keys' initial rows),
# the deduplicated storage gradient and one sparse apply.
keys = tf.constant(rng.integers(0, 30, (8, 5)), tf.int64)
for combiner in ("sum", "mean", "none"):
    layer = HeraldEmbedding(4, capacity=100, combiner=combiner, seed=3, initializer=init,
                            optimizer=OptimizerConfig("adagrad", learning_rate=0.1))
    assert isinstance(layer, k.layers.Layer), type(layer).__mro__
    weight = tf.constant(rng.normal(size=(8, 5, 4) if combiner == "none" else (8, 4)),
                         tf.float32)
    with tf.GradientTape() as tape:
        layer.build(keys.shape)
        storage = compat.tf_variable(layer.storage)
        tape.watch(storage)
        y = layer(keys, training=True)
        loss = tf.reduce_sum(y * weight)
    grad = tape.gradient(loss, storage)
    layer.apply_embedding_gradients(grad)
    out[f"{combiner}/forward"] = y.numpy()
    out[f"{combiner}/grad_indices"] = grad.indices.numpy()
    out[f"{combiner}/grad_values"] = grad.values.numpy()
    out[f"{combiner}/storage"] = layer.storage.numpy()
    out[f"{combiner}/inference"] = layer(keys + 7, training=False).numpy()

# A user's tf.keras model with HeraldEmbedding tables through fit / evaluate / predict.
fields, n = 4, 192
cat = (np.arange(fields, dtype=np.int64) << 32) | rng.zipf(1.5, (n, fields)).clip(1, 40)
dense = rng.normal(size=(n, 3)).astype(np.float32)
label = (cat[:, 0] % 3 == 0).astype(np.float32)
key_in = k.Input((fields,), dtype="int64", name="categorical")
dense_in = k.Input((3,), name="dense")
opt = OptimizerConfig("adam", learning_rate=0.01, epsilon=1e-4)
deep = HeraldEmbedding(4, capacity=500, combiner="none", optimizer=opt, initializer=init,
                       seed=1, name="deep_embedding")(key_in)
wide = HeraldEmbedding(1, capacity=500, combiner="sum", optimizer=opt, initializer=init,
                       seed=2, name="wide_embedding")(key_in)
x = k.layers.Concatenate()([k.layers.Flatten()(deep), dense_in])
x = k.layers.Dense(8, activation="relu", name="hidden",
                   kernel_initializer=k.initializers.GlorotUniform(10))(x)
logit = k.layers.Dense(1, name="logit", kernel_initializer=k.initializers.GlorotUniform(20))(x)
model = HeraldModel({"categorical": key_in, "dense": dense_in},
                    k.layers.Activation("sigmoid")(k.layers.Add()([logit, wide])))
model.compile(k.optimizers.SGD(0.1), "binary_crossentropy",
              metrics=[k.metrics.AUC(name="auc")], steps_per_execution=3)
features = {"categorical": cat, "dense": dense}
history = model.fit(features, label, batch_size=16, epochs=2, shuffle=False, verbose=2,
                    callbacks=[k.callbacks.CSVLogger(csv_path),
                               k.callbacks.LearningRateScheduler(lambda e, lr: 0.1 / (1 + e))])
out["history/loss"] = np.array(history.history["loss"])
rows_before = [t.rows_used.numpy() for t in herald_embeddings(model)]
held_out = {"categorical": cat + 1000, "dense": dense}  # mostly unseen keys
out["evaluate"] = np.array(model.evaluate(features, label, batch_size=64, verbose=0))
out["predict"] = model.predict(held_out, batch_size=64, verbose=0)
assert [t.rows_used.numpy() for t in herald_embeddings(model)] == rows_before
for w in model.trainable_weights:
    out["dense/" + (getattr(w, "path", None) or w.name.split(":")[0])] = w.numpy()
for table in herald_embeddings(model):
    all_keys = tf.constant(np.unique(cat))
    slots = table.key_to_slot.lookup(all_keys).numpy()
    out[f"rows/{table.name}"] = table.storage.numpy()[slots]
    out[f"versions/{table.name}"] = table.versions.numpy()[slots]
np.savez(out_path, **out)
"""


@pytest.fixture(scope="module")
def both_kerases(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """The script's outputs under Keras 3 and under tf-keras (run side by side)."""
    tmp = tmp_path_factory.mktemp("legacy_keras")
    runs = {"keras3": False, "tf_keras": True}
    run_jobs([[sys.executable, "-c", SCRIPT, str(tmp / f"{name}.npz"), str(tmp / f"{name}.csv")]
              for name in runs], [str(tmp / f"{name}.log") for name in runs],
             [job_env(legacy) for legacy in runs.values()])
    results = {}
    for name in runs:
        with np.load(tmp / f"{name}.npz") as data:
            results[name] = dict(data)
        results[name]["csv"] = open(tmp / f"{name}.csv").read()
        results[name]["log"] = open(tmp / f"{name}.log", errors="replace").read()
    assert not results["keras3"]["legacy"] and results["tf_keras"]["legacy"]
    return results


@pytest.mark.parametrize("combiner", ["sum", "mean", "none"])
def test_layer_forward_and_gradient_under_tf_keras_equal_keras3(both_kerases,
                                                                combiner: str) -> None:
    new, old = both_kerases["keras3"], both_kerases["tf_keras"]
    for part in ("forward", "grad_values", "storage", "inference"):
        assert_close(old[f"{combiner}/{part}"], new[f"{combiner}/{part}"])
    np.testing.assert_array_equal(old[f"{combiner}/grad_indices"],
                                  new[f"{combiner}/grad_indices"])


def test_tf_keras_model_fit_evaluate_predict_with_callbacks_equal_keras3(both_kerases) -> None:
    new, old = both_kerases["keras3"], both_kerases["tf_keras"]
    names = sorted(n for n in new if n.startswith(("dense/", "rows/", "versions/")))
    assert names == sorted(n for n in old if n.startswith(("dense/", "rows/", "versions/")))
    assert len([n for n in names if n.startswith("dense/")]) == 4
    for name in names:
        if name.startswith("versions/"):
            np.testing.assert_array_equal(old[name], new[name])
        else:
            assert_close(old[name], new[name])
    for name in ("history/loss", "evaluate", "predict"):
        assert_close(old[name], new[name])
    # The progress output and the CSVLogger callback saw both epochs with the loss and metric.
    assert "Epoch 2/2" in old["log"] and " - auc: " in old["log"]
    lines = old["csv"].strip().splitlines()
    assert lines[0].split(",")[:3] == ["epoch", "auc", "loss"] and len(lines) == 3


def _check_tf_keras_workers_equal_keras3_reference(tmp_path, mode: str, optimizer: str,
                                                   steps: int,
                                                   backend: str = "tf_distribute") -> None:
    """2 tf-keras workers (MultiWorkerMirroredStrategy) train WDL through 2 real PS; the Keras 3
    single-process reference trains the same global batches: every touched row (read from the
    PS) and every dense weight must agree within 1e-5 relative."""
    common = ["--model", "wdl", "--optimizer", optimizer, "--num-workers", "2", "--steps",
              str(steps), "--batch-size", "8"]
    ref_out = str(tmp_path / "ref.npz")
    with PsCluster(num_shards=2, tmp_dir=tmp_path, num_workers=2) as cluster:
        commands = [[sys.executable, JOB, "reference", *common, "--out", ref_out],
                    *worker_commands(cluster, [str(tmp_path / f"w{rank}.npz") for rank in range(2)],
                                     [*common, "--mode", mode, "--backend", backend])]
        # The reference is Keras 3; the workers run tf-keras.
        run_jobs(commands, [str(tmp_path / f"job{i}.log") for i in range(len(commands))],
                 [job_env(False), job_env(True), job_env(True)])
        ref = np.load(ref_out)
        transport = cluster.transport()
        tables = [k.split("/", 1)[1] for k in ref.files if k.startswith("rows/")]
        assert tables == ["deep_embedding", "wide_embedding"]
        for name in tables:
            if mode == "allreduce":  # every replica holds the whole table, the PS nothing
                for rank in range(2):
                    with np.load(tmp_path / f"w{rank}.npz") as out:
                        assert_close(out[f"rows/{name}"], ref[f"rows/{name}"])
                continue
            pulled = transport.pull(name, ref["keys"]).wait()
            assert_close(pulled.values, ref[f"rows/{name}"])
            np.testing.assert_array_equal(pulled.versions, ref[f"versions/{name}"])
    for rank in range(2):
        with np.load(tmp_path / f"w{rank}.npz") as out:
            dense = [k for k in ref.files if k.startswith("dense/")]
            assert len(dense) == 4 and all(k in out.files for k in dense)
            for key in dense:
                assert_close(out[key], ref[key])
            assert json.loads(str(out["stats"]))["steps"] == steps
            assert str(out["keras"]) == "tf_keras"
            if backend == "tf_distribute":
                # fit's logged loss (the mean over the run's global batches) is the
                # reference's; under Horovod each worker logs the loss of its own samples.
                logged = json.loads(str(out["history"]))["loss"]
                assert_close(logged, json.loads(str(ref["history"]))["loss"])
    assert str(ref["keras"]) == "keras3"


def test_two_tf_keras_workers_in_ps_mode_equal_the_keras3_reference(tmp_path) -> None:
    _check_tf_keras_workers_equal_keras3_reference(tmp_path, "ps", "adagrad", steps=21)


def test_two_tf_keras_workers_with_horovod_equal_the_keras3_reference(tmp_path) -> None:
    pytest.importorskip("horovod.tensorflow")
    _check_tf_keras_workers_equal_keras3_reference(tmp_path, "herald", "sgd", steps=21,
                                                   backend="horovod")


@pytest.mark.slow
@pytest.mark.parametrize("mode,optimizer", [("herald", "adam"), ("het", "sgd"),
                                            ("allreduce", "adagrad")])
def test_two_tf_keras_workers_in_other_modes_equal_the_keras3_reference(tmp_path, mode: str,
                                                                      optimizer: str) -> None:
    _check_tf_keras_workers_equal_keras3_reference(tmp_path, mode, optimizer, steps=31)
