"""CTR models on herald tables: WDL, DeepFM, DCN and DLRM as ordinary Keras functional models.

Every model takes ``categorical`` (``[B, F]`` int64 keys, field << 32 | value) and ``dense``
(``[B, D]`` floats) inputs and returns the click probability ``[B, 1]``. Embedding tables are
``HeraldEmbedding`` layers: built inside a ``WorkerRuntime.scope()`` they train on the parameter
servers; otherwise they are the single-process reference (``local`` mode). Every model takes
``learning_rate_schedule`` (a Keras ``LearningRateSchedule``) for the rows of all its tables.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from herald_tf import InitializerConfig, OptimizerConfig
from herald_tf.keras import HeraldEmbedding, HeraldModel


def _inputs(fields: int, dense: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    return (keras.Input((fields,), dtype="int64", name="categorical"),
            keras.Input((dense,), name="dense"))


def _embedding(dim: int, capacity: int, optimizer: OptimizerConfig, seed: int, name: str,
               combiner: str = "none", schedule: object = None) -> HeraldEmbedding:
    return HeraldEmbedding(dim, capacity=capacity, combiner=combiner, optimizer=optimizer,
                           initializer=InitializerConfig("uniform", -0.05, 0.05), seed=seed,
                           name=name, learning_rate_schedule=schedule)


def _mlp(x: keras.KerasTensor, units: tuple[int, ...], prefix: str, seed: int
         ) -> keras.KerasTensor:
    for i, u in enumerate(units):
        x = keras.layers.Dense(u, activation="relu", name=f"{prefix}_{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
    return x


def _head(x: keras.KerasTensor, seed: int, name: str = "logit") -> keras.KerasTensor:
    return keras.layers.Dense(1, name=name,
                              kernel_initializer=keras.initializers.GlorotUniform(seed))(x)


def wdl(fields: int, dense: int, dim: int, capacity: int, optimizer: OptimizerConfig,
        hidden: tuple[int, ...] = (256, 128),
        learning_rate_schedule: object = None) -> HeraldModel:
    """Wide & Deep: a deep MLP over the field embeddings and dense features, plus a wide
    (dim-1, summed) embedding of the same keys."""
    keys, numeric = _inputs(fields, dense)
    deep = _embedding(dim, capacity, optimizer, 1, "deep_embedding",
                      schedule=learning_rate_schedule)(keys)
    wide = _embedding(1, capacity, optimizer, 2, "wide_embedding", combiner="sum",
                      schedule=learning_rate_schedule)(keys)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(deep), numeric])
    logit = keras.layers.Add()([_head(_mlp(x, hidden, "deep", 10), 20), wide])
    return HeraldModel({"categorical": keys, "dense": numeric},
                       keras.layers.Activation("sigmoid", name="ctr")(logit), name="wdl")


def deepfm(fields: int, dense: int, dim: int, capacity: int, optimizer: OptimizerConfig,
           hidden: tuple[int, ...] = (256, 128),
           learning_rate_schedule: object = None) -> HeraldModel:
    """DeepFM: first-order weights, pairwise factorisation-machine interactions of the field
    embeddings, and a deep MLP, summed into one logit."""
    keys, numeric = _inputs(fields, dense)
    emb = _embedding(dim, capacity, optimizer, 1, "fm_embedding",
                     schedule=learning_rate_schedule)(keys)  # [B, F, dim]
    first = _embedding(1, capacity, optimizer, 2, "first_order", combiner="sum",
                       schedule=learning_rate_schedule)(keys)
    summed = keras.ops.sum(emb, axis=1)
    fm = 0.5 * keras.ops.sum(summed * summed - keras.ops.sum(emb * emb, axis=1), axis=1,
                             keepdims=True)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(emb), numeric])
    logit = keras.layers.Add()([_head(_mlp(x, hidden, "deep", 10), 20), first, fm,
                                _head(numeric, 30, "dense_linear")])
    return HeraldModel({"categorical": keys, "dense": numeric},
                       keras.layers.Activation("sigmoid", name="ctr")(logit), name="deepfm")


class CrossLayer(keras.layers.Layer):
    """One DCN cross layer: x_{l+1} = x0 * (x_l · w) + b + x_l."""

    def __init__(self, seed: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape: tuple[int, ...]) -> None:
        d = input_shape[0][-1]
        self.w = self.add_weight(shape=(d, 1),
                                 initializer=keras.initializers.GlorotUniform(self.seed),
                                 name="w")
        self.b = self.add_weight(shape=(d,), initializer="zeros", name="b")

    def call(self, inputs: list[keras.KerasTensor]) -> keras.KerasTensor:
        x0, x = inputs
        return x0 * keras.ops.matmul(x, self.w) + self.b + x

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "seed": self.seed}


def dcn(fields: int, dense: int, dim: int, capacity: int, optimizer: OptimizerConfig,
        hidden: tuple[int, ...] = (256, 128), cross_layers: int = 3,
        learning_rate_schedule: object = None) -> HeraldModel:
    """Deep & Cross Network: explicit feature crosses next to a deep MLP."""
    keys, numeric = _inputs(fields, dense)
    emb = _embedding(dim, capacity, optimizer, 1, "dcn_embedding",
                     schedule=learning_rate_schedule)(keys)
    x0 = keras.layers.Concatenate()([keras.layers.Flatten()(emb), numeric])
    x = x0
    for i in range(cross_layers):
        x = CrossLayer(seed=40 + i, name=f"cross_{i}")([x0, x])
    both = keras.layers.Concatenate()([x, _mlp(x0, hidden, "deep", 10)])
    return HeraldModel({"categorical": keys, "dense": numeric},
                       keras.layers.Activation("sigmoid", name="ctr")(_head(both, 20)),
                       name="dcn")


def dlrm(fields: int, dense: int, dim: int, capacity: int, optimizer: OptimizerConfig,
         bottom: tuple[int, ...] = (64,), top: tuple[int, ...] = (256, 128),
         learning_rate_schedule: object = None) -> HeraldModel:
    """DLRM: a bottom MLP maps dense features to the embedding width; the pairwise dot products
    of all embedding vectors (and the bottom output) feed a top MLP."""
    keys, numeric = _inputs(fields, dense)
    emb = _embedding(dim, capacity, optimizer, 1, "dlrm_embedding",
                     schedule=learning_rate_schedule)(keys)  # [B, F, dim]
    z = keras.layers.Dense(dim, activation="relu", name="bottom_out",
                           kernel_initializer=keras.initializers.GlorotUniform(5))(
        _mlp(numeric, bottom, "bottom", 0))
    vectors = keras.layers.Concatenate(axis=1)([keras.ops.expand_dims(z, 1), emb])
    dots = keras.ops.matmul(vectors, keras.ops.transpose(vectors, (0, 2, 1)))
    n = fields + 1
    rows, cols = zip(*[(i, j) for i in range(n) for j in range(i)])
    flat = keras.ops.reshape(dots, (-1, n * n))
    pairs = keras.ops.take(flat, [r * n + c for r, c in zip(rows, cols)], axis=1)
    x = keras.layers.Concatenate()([z, pairs])
    return HeraldModel({"categorical": keys, "dense": numeric},
                       keras.layers.Activation("sigmoid", name="ctr")(
                           _head(_mlp(x, top, "top", 10), 20)), name="dlrm")


MODELS: dict[str, Callable[..., HeraldModel]] = {
    "wdl": wdl, "deepfm": deepfm, "dcn": dcn, "dlrm": dlrm,
}
