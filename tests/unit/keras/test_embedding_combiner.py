"""HeraldEmbedding's combiner: one canonical name from construction on, a clear error otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from herald_tf.config import Combiner
from herald_tf.errors import InvalidArgumentError
from herald_tf.keras import HeraldEmbedding


@pytest.mark.parametrize("given", ["SUM", "Sum", Combiner.SUM])
def test_combiner_is_accepted_in_any_case_and_kept_lowercase(given) -> None:
    layer = HeraldEmbedding(4, capacity=10, combiner=given)
    assert layer.combiner == "sum"
    assert layer.get_config()["combiner"] == "sum"


def test_an_uppercase_combiner_pools_like_the_lowercase_one_in_training_and_inference() -> None:
    keys = tf.constant([[1, 2, 3], [4, 5, 5]], tf.int64)
    upper, lower = (HeraldEmbedding(4, capacity=10, combiner=c, seed=1) for c in ("MEAN", "mean"))
    for training in (False, True):
        np.testing.assert_array_equal(upper(keys, training=training).numpy(),
                                      lower(keys, training=training).numpy())


@pytest.mark.parametrize("given", ["avg", "", None, 1])
def test_an_unknown_combiner_is_refused_naming_the_valid_ones(given) -> None:
    with pytest.raises(InvalidArgumentError, match=r"one of none, sum, mean, sqrtn\. Received"):
        HeraldEmbedding(4, capacity=10, combiner=given)
