"""Keras integration: the ``HeraldEmbedding`` layer, ``HeraldModel`` and ``export_for_serving``.

They are Keras 3 classes, or tf-keras (Keras 2) ones when ``TF_USE_LEGACY_KERAS=1`` is set
before TensorFlow is imported, decided once at import as TensorFlow decides what ``tf.keras``
is (``herald_tf.keras.compat``).
"""

from herald_tf.keras.embedding import HeraldEmbedding
from herald_tf.keras.export import export_for_serving
from herald_tf.keras.model import HeraldModel, herald_embeddings

__all__ = ["HeraldEmbedding", "HeraldModel", "export_for_serving", "herald_embeddings"]
