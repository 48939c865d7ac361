"""Keras integration: the ``HeraldEmbedding`` layer and ``HeraldModel``."""

from herald_tf.keras.embedding import HeraldEmbedding
from herald_tf.keras.model import HeraldModel, herald_embeddings

__all__ = ["HeraldEmbedding", "HeraldModel", "herald_embeddings"]
