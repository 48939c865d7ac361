"""herald_tf: distributed training of recommendation models with huge embedding tables.

Embedding scheduling (location-aware input allocation and an exact communication plan) over
sharded parameter servers, as a TensorFlow plugin. Importing herald_tf changes nothing in
TensorFlow or Keras; the op library is loaded on first use.
"""

from herald_tf.config import (
    Combiner,
    InitializerConfig,
    InitializerKind,
    OptimizerConfig,
    OptimizerKind,
    TableConfig,
)
from herald_tf.errors import (
    HeraldError,
    InvalidArgumentError,
    LibraryNotFoundError,
    OutOfRangeError,
)

__version__ = "0.1.0"

__all__ = [
    "Combiner",
    "HeraldError",
    "InitializerConfig",
    "InitializerKind",
    "InvalidArgumentError",
    "LibraryNotFoundError",
    "OptimizerConfig",
    "OptimizerKind",
    "OutOfRangeError",
    "TableConfig",
]
