"""HeraldModel.compile refuses Keras optimizer options that would act on dense weights only."""

from __future__ import annotations

import keras
import pytest

from herald_tf.errors import InvalidArgumentError
from herald_tf.keras import HeraldEmbedding, HeraldModel


def _model() -> HeraldModel:
    keys = keras.Input((3,), dtype="int64")
    return HeraldModel(keys, keras.layers.Dense(1)(HeraldEmbedding(4, capacity=10)(keys)))


@pytest.mark.parametrize("option", [
    {"clipnorm": 1.0}, {"global_clipnorm": 1.0}, {"clipvalue": 0.5}, {"weight_decay": 0.01},
    {"gradient_accumulation_steps": 2}, {"use_ema": True}, {"loss_scale_factor": 8.0},
])
def test_optimizer_options_that_skip_the_embedding_rows_are_refused(option) -> None:
    (name, value), = option.items()
    with pytest.raises(InvalidArgumentError, match=f"without {name}.*Received: {name}={value}"):
        _model().compile(keras.optimizers.SGD(0.1, **option), "mse")


def test_a_plain_optimizer_compiles() -> None:
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    assert model.compiled
