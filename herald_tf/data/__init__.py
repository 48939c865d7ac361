"""Data: Criteo-format reading and synthetic generation (TensorFlow-free).

``CriteoReader`` streams Criteo Kaggle TSV files into int64 keys and transformed dense features;
``SyntheticCriteo`` writes the same format (or produces key arrays directly) with Criteo's
cardinalities, power-law popularity, optional time locality and learnable labels.
"""

from herald_tf.data.criteo import (
    EMPTY_KEY_BIT,
    CriteoBatch,
    CriteoFormatError,
    CriteoReader,
    dense_transform,
    empty_key,
    make_keys,
    read_keys,
)
from herald_tf.data.synthetic import CRITEO_CARDINALITIES, SyntheticConfig, SyntheticCriteo

__all__ = [
    "CRITEO_CARDINALITIES",
    "EMPTY_KEY_BIT",
    "CriteoBatch",
    "CriteoFormatError",
    "CriteoReader",
    "SyntheticConfig",
    "SyntheticCriteo",
    "dense_transform",
    "empty_key",
    "make_keys",
    "read_keys",
]
