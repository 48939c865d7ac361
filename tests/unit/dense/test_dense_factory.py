"""make_dense_sync: backend choice from arguments and HERALD_* variables, and its refusals."""

from __future__ import annotations

import pytest

from herald_tf import env
from herald_tf.dense import DenseSyncKind, NoneDenseSync, make_dense_sync


def test_default_backend_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env.DENSE_SYNC_VAR, raising=False)
    monkeypatch.delenv(env.NUM_WORKERS_VAR, raising=False)
    sync = make_dense_sync()
    assert isinstance(sync, NoneDenseSync)
    assert (sync.rank, sync.num_workers, sync.embedding_gradient_scale) == (0, 1, 1.0)


def test_backend_name_comes_from_herald_dense_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.DENSE_SYNC_VAR, "tf.distribute")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv(env.NUM_WORKERS_VAR, raising=False)
    monkeypatch.delenv(env.RANK_VAR, raising=False)
    sync = make_dense_sync()
    assert sync.kind is DenseSyncKind.TF_DISTRIBUTE
    assert (sync.rank, sync.num_workers) == (0, 1)


def test_none_refuses_several_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.NUM_WORKERS_VAR, "2")
    with pytest.raises(ValueError, match="trains one process.*num_workers=2"):
        make_dense_sync("none")


def test_tf_distribute_checks_the_worker_count_against_herald_num_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG names 1 workers, expected 3"):
        make_dense_sync("tf_distribute", num_workers=3)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="Received: name='nccl'"):
        make_dense_sync("nccl")


def test_bad_integer_in_herald_rank_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.RANK_VAR, "first")
    with pytest.raises(ValueError, match="HERALD_RANK"):
        make_dense_sync("none")
