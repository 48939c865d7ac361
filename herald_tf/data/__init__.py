"""Data: Criteo- and Avazu-format reading and synthetic generation (TensorFlow-free).

``AvazuReader`` streams Avazu CSV files into int64 keys (hashes stock TensorFlow reproduces);
``CriteoReader`` streams Criteo Kaggle TSV files into int64 keys and transformed dense features;
``SyntheticCriteo`` writes the same format (or produces key arrays directly) with Criteo's
cardinalities, power-law popularity, optional time locality and learnable labels;
``read_samples`` parses such a file once into a memory-mapped ``Samples`` (a run's training
part and held-out tail) that no process holds whole (kept and shared by a host's processes
with ``keep``). Names are
imported lazily, so ``python -m herald_tf.data.synthetic`` runs without a double import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EMPTY_KEY_BIT": "criteo",
    "CriteoBatch": "criteo",
    "CriteoFormatError": "criteo",
    "CriteoReader": "criteo",
    "dense_transform": "criteo",
    "empty_key": "criteo",
    "make_keys": "criteo",
    "read_keys": "criteo",
    "CRITEO_CARDINALITIES": "synthetic",
    "SyntheticConfig": "synthetic",
    "SyntheticCriteo": "synthetic",
    "AvazuFormatError": "avazu",
    "AvazuReader": "avazu",
    "keys_tf": "avazu",
    "write_synthetic_avazu": "avazu",
    "Samples": "samples",
    "read_samples": "samples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'herald_tf.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"herald_tf.data.{module}"), name)
