"""`make demo`: a small end-to-end training through herald's ops, printing what it did.

A wide-and-deep style CTR model with 26 HeraldEmbedding-backed categorical fields (int64 keys,
field << 32 | value, power-law popularity) and 13 dense features, labels from a hidden model,
trained with model.fit in `local` mode (the single-process reference of DESIGN §2a), then
evaluated on held-out samples. The distributed modes build on this path.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from herald_tf import OptimizerConfig  # noqa: E402
from herald_tf.keras import HeraldEmbedding, HeraldModel, herald_embeddings  # noqa: E402

FIELDS, DENSE, DIM = 26, 13, 16
CARDINALITY = 2000  # per field


def make_data(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Power-law keys per field and labels from a hidden logistic model over keys and dense."""
    rng = np.random.default_rng(seed)
    values = np.minimum(rng.zipf(1.2, size=(n, FIELDS)) - 1, CARDINALITY - 1)
    keys = (np.arange(FIELDS, dtype=np.int64) << 32) | values.astype(np.int64)
    hidden = np.random.default_rng(1234)
    key_weight = hidden.normal(0, 1.0, size=(FIELDS, CARDINALITY))
    dense = rng.lognormal(0, 1, size=(n, DENSE)).astype(np.float32)
    dense = np.log1p(dense)
    logit = key_weight[np.arange(FIELDS), values].sum(1) / np.sqrt(FIELDS) * 2.0
    logit += dense @ hidden.normal(0, 0.5, size=DENSE) - 1.0
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)[:, None]
    return [keys, dense], labels


def build_model() -> HeraldModel:
    keys = keras.Input((FIELDS,), dtype="int64", name="categorical")
    dense = keras.Input((DENSE,), name="numerical")
    deep = HeraldEmbedding(DIM, capacity=FIELDS * CARDINALITY, combiner="none", seed=7,
                           optimizer=OptimizerConfig("adagrad", learning_rate=0.05),
                           name="deep_embedding")(keys)
    wide = HeraldEmbedding(1, capacity=FIELDS * CARDINALITY, combiner="sum", seed=8,
                           optimizer=OptimizerConfig("adagrad", learning_rate=0.05),
                           name="wide_embedding")(keys)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(deep), dense])
    for units in (64, 32):
        x = keras.layers.Dense(units, activation="relu")(x)
    logit = keras.layers.Add()([keras.layers.Dense(1)(x), wide])
    return HeraldModel([keys, dense], keras.layers.Activation("sigmoid")(logit))


def main() -> None:
    train_x, train_y = make_data(40_000, seed=0)
    test_x, test_y = make_data(8_000, seed=1)
    model = build_model()
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryCrossentropy(
                      name="logloss")], steps_per_execution=4)
    print(f"training: {len(train_y)} samples, {FIELDS} fields, batch 512, mode=local")
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=512, epochs=3, verbose=2)
    elapsed = time.perf_counter() - start
    loss, auc, logloss = model.evaluate(test_x, test_y, batch_size=1024, verbose=0)
    rows = {t.name: int(t.rows_used.numpy()) for t in herald_embeddings(model)}
    print(f"held-out: loss {loss:.4f}  logloss {logloss:.4f}  AUC {auc:.4f}")
    print(f"throughput: {3 * len(train_y) / elapsed:,.0f} samples/s over {elapsed:.1f} s")
    print(f"embedding rows created: {rows}")


if __name__ == "__main__":
    main()
