"""The one place that knows which Keras herald_tf's layer and model run on.

TensorFlow routes ``tf.keras`` to tf-keras (Keras 2) when ``TF_USE_LEGACY_KERAS`` is ``1``,
``true`` or ``True`` at import, and to Keras 3 otherwise; herald_tf decides the same way, once,
when this module is imported, so that ``HeraldEmbedding`` and ``HeraldModel`` subclass the
classes a user's ``tf.keras`` model is made of. Everything that differs between the two is a
function here; the layer and the model have one implementation.

tf-keras 2.21 is installed with ``pip install --no-deps tf-keras==2.21.0`` (its dependencies
would pull the full TensorFlow wheel over tensorflow-cpu; ``make setup`` does this).
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

# The variable behind a weight, for either Keras (one implementation, re-exported here).
from herald_tf.dense.types import tf_variable

#: TensorFlow's own switch (tensorflow/__init__.py and its Keras lazy loader read it the same way).
LEGACY_KERAS_VAR = "TF_USE_LEGACY_KERAS"

#: True when ``tf.keras`` is tf-keras (Keras 2) in this process.
LEGACY_KERAS = os.environ.get(LEGACY_KERAS_VAR) in ("1", "true", "True")

if LEGACY_KERAS:
    try:
        import tf_keras as keras
    except ImportError as e:  # TensorFlow itself fails the same way on first use of tf.keras
        raise ImportError(
            f"{LEGACY_KERAS_VAR} is set, so tf.keras is tf-keras, but tf_keras is not installed. "
            "Install it with `pip install --no-deps tf-keras==2.21.0` (without --no-deps it "
            f"pulls the full TensorFlow wheel), or unset {LEGACY_KERAS_VAR} to use Keras 3."
        ) from e
else:
    import keras

__all__ = [
    "LEGACY_KERAS",
    "compute_loss",
    "dtype_policy_name",
    "is_loss_scale_optimizer",
    "optimizer_built",
    "keras",
    "scale_loss",
    "tf_variable",
]


def compute_loss(model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> tf.Tensor:
    """The training loss of one step (scaled for tf.distribute as the optimizer expects), with
    the model's loss metric updated as its own ``train_step`` would."""
    if LEGACY_KERAS:  # the compiled loss tracks the loss metric itself
        return model.compute_loss(x, y, y_pred, sample_weight)
    from keras.src.losses.loss import unscale_loss_for_distribution

    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                              training=True)
    model._loss_tracker.update_state(unscale_loss_for_distribution(loss),
                                     sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
    return loss


def scale_loss(optimizer: Any, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: Keras 3 optimizers may scale it (loss scaling); tf-keras'
    LossScaleOptimizer is refused at compile, so nothing scales it there."""
    return loss if LEGACY_KERAS else optimizer.scale_loss(loss)


def dtype_policy_name() -> str:
    """Name of the global dtype policy (``float32`` unless mixed precision is on)."""
    if LEGACY_KERAS:
        return keras.mixed_precision.global_policy().name
    return keras.config.dtype_policy().name


def is_loss_scale_optimizer(optimizer: Any) -> bool:
    """True for the Keras in use's loss-scaling (mixed precision) optimizer wrapper."""
    wrapper = (keras.mixed_precision.LossScaleOptimizer if LEGACY_KERAS
               else keras.optimizers.LossScaleOptimizer)
    return isinstance(optimizer, wrapper)


def optimizer_built(optimizer: Any) -> bool:
    """True once the optimizer has created its variables (tf-keras keeps the flag private)."""
    return bool(getattr(optimizer, "_built" if LEGACY_KERAS else "built", False))
