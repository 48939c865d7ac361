"""The ``horovod`` backend: Gloo variables, the rendezvous store, one in-process worker."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf

from herald_tf.dense.horovod import GlooRendezvous, horovod_worker_env


def test_worker_env_names_one_host_and_binds_gloo_to_loopback() -> None:
    env = horovod_worker_env(1, 3, "127.0.0.1:4567", cycle_time_ms=7.0)
    assert env["HOROVOD_RANK"] == env["HOROVOD_LOCAL_RANK"] == "1"
    assert env["HOROVOD_SIZE"] == env["HOROVOD_LOCAL_SIZE"] == "3"
    assert (env["HOROVOD_CROSS_RANK"], env["HOROVOD_CROSS_SIZE"]) == ("0", "1")
    assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "127.0.0.1"
    assert env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "4567"
    assert env["HOROVOD_GLOO_IFACE"] == "lo"
    assert env["HOROVOD_CYCLE_TIME"] == "7.0"
    assert "HOROVOD_GLOO_IFACE" not in horovod_worker_env(0, 2, "10.0.0.5:80")


@pytest.mark.parametrize("rank,size,address,match", [
    (2, 2, "127.0.0.1:1", "0 <= rank < num_workers"),
    (0, 2, "127.0.0.1", "host:port"),
    (0, 2, ":80", "host:port"),
])
def test_worker_env_refuses_bad_arguments(rank: int, size: int, address: str,
                                          match: str) -> None:
    with pytest.raises(ValueError, match=match):
        horovod_worker_env(rank, size, address)


def test_rendezvous_serves_on_a_loopback_port_and_stops() -> None:
    pytest.importorskip("horovod.runner.http.http_server")
    rendezvous = GlooRendezvous(2).start()
    host, port = rendezvous.address.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    with socket.create_connection((host, int(port)), timeout=5):
        pass
    rendezvous.stop()
    rendezvous.stop()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


@pytest.fixture(scope="module")
def one_worker() -> Iterator[object]:
    pytest.importorskip("horovod.tensorflow")
    from herald_tf.dense.horovod import HorovodDenseSync

    mp = pytest.MonkeyPatch()
    mp.setenv("HOROVOD_CYCLE_TIME", "5")  # restored after the module (Horovod reads it at init)
    sync = HorovodDenseSync()
    yield sync
    sync.shutdown()
    mp.undo()


def test_one_worker_has_rank_zero_and_unit_scale(one_worker: object) -> None:
    assert (one_worker.rank, one_worker.num_workers) == (0, 1)
    assert one_worker.embedding_gradient_scale == 1.0
    assert one_worker.reduces_dense_in_train_step
    assert len(one_worker.callbacks()) == 1


def test_one_worker_collectives_keep_values(one_worker: object) -> None:
    grads = [tf.constant([1.0, 2.0]), None]
    out = one_worker.allreduce_dense(grads)
    np.testing.assert_array_equal(out[0].numpy(), [1.0, 2.0])
    assert out[1] is None
    np.testing.assert_array_equal(one_worker.allreduce_sum(tf.constant([3.0]), name="t").numpy(),
                                  [3.0])
    v = tf.Variable([5.0])
    one_worker.broadcast_variables([v])
    one_worker.barrier()
    assert float(v.numpy()[0]) == 5.0


def test_workers_on_several_hosts_without_horovodrun_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("horovod.tensorflow")
    from herald_tf.dense import make_dense_sync

    monkeypatch.delenv("HOROVOD_GLOO_RENDEZVOUS_ADDR", raising=False)
    monkeypatch.setenv("HERALD_LOCAL_SIZE", "2")
    with pytest.raises(ValueError, match="need horovodrun.*2 of 4 workers on this host"):
        make_dense_sync("horovod", rank=1, num_workers=4, coordinator="127.0.0.1:9")


def test_several_workers_need_a_rank_and_a_coordinator(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("horovod.tensorflow")
    from herald_tf.dense.horovod import HorovodDenseSync

    monkeypatch.delenv("HOROVOD_GLOO_RENDEZVOUS_ADDR", raising=False)
    with pytest.raises(ValueError, match="HERALD_COORDINATOR"):
        HorovodDenseSync(rank=0, num_workers=2)
