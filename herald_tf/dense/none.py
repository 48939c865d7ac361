"""``none``: one worker process, nothing to synchronise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from herald_tf.dense.types import DenseSync, DenseSyncKind


class NoneDenseSync(DenseSync):
    """The single-process backend: N = 1, every collective is the identity.

    Gradient scale: the loss is the mean over the process's batch B = G, so its embedding
    gradient already is ∂(Σᵢ lossᵢ)/G and ``embedding_gradient_scale`` is 1. This is the
    reference of DESIGN §2a that every other backend is compared with.
    """

    kind = DenseSyncKind.NONE

    @property
    def rank(self) -> int:
        return 0

    @property
    def num_workers(self) -> int:
        return 1

    @property
    def embedding_gradient_scale(self) -> float:
        return 1.0

    def allreduce_dense(self, grads: Sequence[Any]) -> list[Any]:
        return list(grads)

    def allreduce_sum(self, tensor: tf.Tensor, name: str | None = None) -> tf.Tensor:
        return tensor

    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None:
        if root_rank != 0:
            raise ValueError(
                f"Expected root_rank 0 with one worker. Received: root_rank={root_rank}")

    def barrier(self) -> None:
        return None
