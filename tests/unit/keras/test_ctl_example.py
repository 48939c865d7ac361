"""The tf.distribute custom-training-loop example runs briefly and reports finite metrics."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
SCRIPT = os.path.join(ROOT, "examples", "ctr", "ctl_herald.py")
EPOCH = re.compile(r"^epoch (\d+): loss (\S+) auc (\S+) \| val logloss (\S+) val auc (\S+)",
                   re.MULTILINE)


def test_ctl_example_trains_a_few_steps_and_prints_finite_loss_and_auc() -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--steps", "8", "--epochs", "2", "--batch-size", "128",
         "--num-samples", "3000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    epochs = EPOCH.findall(proc.stdout)
    assert [int(e[0]) for e in epochs] == [1, 2], proc.stdout
    for _, loss, auc, val_loss, val_auc in epochs:
        assert math.isfinite(float(loss)) and 0 < float(loss) < 5
        assert math.isfinite(float(val_loss))
        assert 0 <= float(auc) <= 1 and 0 <= float(val_auc) <= 1
    assert "8 steps/epoch of 128" in proc.stdout


def test_ctl_steps_equal_herald_model_fit_on_the_same_batches() -> None:
    """The hand-written step trains exactly like ``HeraldModel.train_step`` (the reference)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from examples.ctr.ctl_herald import build_model, make_train_step
    from herald_tf.data.synthetic import SyntheticConfig, SyntheticCriteo
    from herald_tf.keras import HeraldModel

    batch, steps, capacity = 64, 4, 8192
    data = SyntheticCriteo(SyntheticConfig(scale=0.001)).batch(batch * steps)
    x = {"categorical": data.keys, "dense": data.dense.astype(np.float32)}
    y = data.labels.astype(np.float32)[:, None]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model, tables = build_model(26, 13, 4, capacity, 0.05, seed=0)
        opt = keras.optimizers.Adam(1e-2)
        opt.build(model.trainable_variables)
    step = make_train_step(model, tables, opt, batch)

    @tf.function
    def run(xb: dict, yb: tf.Tensor) -> None:
        strategy.run(step, args=(xb, yb))

    dist = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensor_slices((x, y)).batch(batch))
    for xb, yb in dist:
        run(xb, yb)

    ref_model, ref_tables = build_model(26, 13, 4, capacity, 0.05, seed=0)
    ref = HeraldModel(ref_model.inputs, ref_model.outputs)
    ref.compile(optimizer=keras.optimizers.Adam(1e-2),
                loss=keras.losses.BinaryCrossentropy(from_logits=True))
    ref.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)

    for got, want in zip(model.trainable_variables, ref.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    for got, want in zip(tables, ref_tables):
        used = int(want.rows_used.numpy())
        assert int(got.rows_used.numpy()) == used > 0
        np.testing.assert_allclose(got.storage.numpy()[:used], want.storage.numpy()[:used],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got.versions.numpy(), want.versions.numpy())
        assert want.versions.numpy().max() > 0  # the rows were trained
