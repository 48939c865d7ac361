"""Fixtures of the multi-process tests: ``ps_cluster`` starts herald-ps processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ps_cluster import PsCluster  # noqa: E402


@pytest.fixture
def ps_cluster(tmp_path: object) -> Iterator[Callable[..., PsCluster]]:
    """Factory: ``ps_cluster(num_shards, **kw)`` → a started PsCluster, stopped at teardown."""
    clusters: list[PsCluster] = []

    def make(num_shards: int, **kwargs: object) -> PsCluster:
        folder = os.path.join(str(tmp_path), f"cluster-{len(clusters)}")
        os.makedirs(folder)
        cluster = PsCluster(num_shards, folder, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for c in clusters:
        c.stop()
