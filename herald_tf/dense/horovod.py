"""``horovod``: dense gradients averaged with horovod.tensorflow over Gloo (no MPI).

Horovod's Keras wrappers are not used: under Keras 3 they do not average gradients (DESIGN §9).
``HeraldModel.train_step`` calls :meth:`HorovodDenseSync.sync_gradients`, which averages the dense
gradients with one grouped allreduce before the Keras optimizer applies them, and nothing
broadcasts dense weights unless asked: ``fit`` needs ``callbacks()`` (or call
``broadcast_model(model)`` once the model is built).

Rendezvous. A process started by ``horovodrun`` (``HOROVOD_GLOO_RENDEZVOUS_ADDR`` set) uses
Horovod's own variables as they are. Otherwise, with ``num_workers > 1``, the workers are taken to
share one host: rank 0 hosts Horovod's HTTP rendezvous store at the coordinator address
(``$HERALD_COORDINATOR``, a port the launcher reserved), the others wait for it, and each process
derives Horovod's variables from its rank (local rank = rank, one cross rank).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from herald_tf.dense.types import DenseSync, DenseSyncKind, iter_present, tf_variable
from herald_tf.keras.compat import keras

#: Milliseconds Horovod's background thread waits between cycles unless HOROVOD_CYCLE_TIME is
#: set: the default (1 ms on an idle queue) keeps a core busy on small machines (DESIGN §4a).
DEFAULT_CYCLE_TIME_MS = 5.0
#: Seconds a worker waits for rank 0's rendezvous store to accept connections.
RENDEZVOUS_TIMEOUT_S = 60.0

_INSTALL_HINT = "Build it into the venv with tools/install_horovod.sh (DESIGN §9)."


def _import_hvd() -> Any:
    try:
        import horovod.tensorflow as hvd
    except ImportError as e:
        raise ImportError(f"The horovod dense sync needs horovod.tensorflow: {e}. "
                          f"{_INSTALL_HINT}") from e
    if not hvd.gloo_built():
        raise ImportError(f"horovod.tensorflow was built without Gloo. {_INSTALL_HINT}")
    return hvd


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"Expected a coordinator address host:port. Received: {address!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def horovod_worker_env(rank: int, num_workers: int, address: str,
                       cycle_time_ms: float = DEFAULT_CYCLE_TIME_MS) -> dict[str, str]:
    """Horovod's Gloo variables for worker ``rank`` of ``num_workers`` on one host.

    ``address`` is the ``host:port`` of the rendezvous store. On loopback Gloo is bound to the
    ``lo`` interface, so nothing leaves the machine.
    """
    if not 0 <= rank < num_workers:
        raise ValueError(f"Expected 0 <= rank < num_workers. Received: rank={rank}, "
                         f"num_workers={num_workers}")
    host, port = _split_address(address)
    env = {
        "HOROVOD_RANK": str(rank), "HOROVOD_SIZE": str(num_workers),
        "HOROVOD_LOCAL_RANK": str(rank), "HOROVOD_LOCAL_SIZE": str(num_workers),
        "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1",
        "HOROVOD_HOSTNAME": "localhost",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": host, "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_CYCLE_TIME": str(cycle_time_ms),
    }
    if _is_loopback(host):
        env["HOROVOD_GLOO_IFACE"] = "lo"
    return env


class GlooRendezvous:
    """Horovod's HTTP rendezvous store for ``num_workers`` Gloo workers on one host.

    ``start()`` binds ``host:port`` (port 0 picks a free one) and serves from a daemon thread;
    ``address`` is what the workers' ``HOROVOD_GLOO_RENDEZVOUS_ADDR``/``PORT`` name; ``stop()``
    closes it. Gloo reads the store only while ``hvd.init()`` connects, but the store must live
    until every worker has initialised.
    """

    def __init__(self, num_workers: int, host: str = "127.0.0.1", port: int = 0) -> None:
        if num_workers < 1:
            raise ValueError(f"Expected num_workers >= 1. Received: num_workers={num_workers}")
        self.num_workers = num_workers
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> GlooRendezvous:
        """Binds the store and serves it; returns ``self``."""
        from horovod.runner.common.util.hosts import SlotInfo
        from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

        server = RendezvousHTTPServer((self.host, self.port), RendezvousHandler, 0)
        n = self.num_workers
        server.init([SlotInfo(hostname="localhost", rank=r, local_rank=r, cross_rank=0, size=n,
                              local_size=n, cross_size=1) for r in range(n)])
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="gloo-rendezvous",
                                        daemon=True)
        self._thread.start()
        return self

    @property
    def address(self) -> str:
        """``host:port`` the store listens on."""
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        """Stops serving and closes the socket (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> GlooRendezvous:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_for_port(host: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"The Gloo rendezvous at {host}:{port} (hosted by rank 0) "
                                   f"did not come up within {timeout_s:.0f} s: {e}") from e
            time.sleep(0.05)


class HorovodDenseSync(DenseSync):
    """Dense sync through horovod.tensorflow (allreduce average, broadcast) over Gloo.

    Gradient scale: every worker's loss is the mean over its own B samples, so averaging the
    dense gradients over the N workers gives the gradient of the mean over G = N·B — the
    single-process dense gradient. The embedding gradient a worker computes is
    ∂(Σ_{i in its batch} lossᵢ)/B; the parameter servers (or ``allreduce_sum``) *sum* the
    workers' contributions, so each is scaled by 1/N first: Σ_w ∂(Σ_{i in w's batch} lossᵢ)/(N·B)
    = ∂(Σᵢ lossᵢ)/G. ``embedding_gradient_scale`` is therefore ``1 / num_workers``. Regularization
    losses are added on every worker; their dense gradients are averaged, so they count once.

    Args:
        rank: this worker's rank when Horovod's variables are derived (default ``$HERALD_RANK``).
        num_workers: number of workers (default ``$HERALD_NUM_WORKERS``, else Horovod's size).
        coordinator: ``host:port`` of the rendezvous (default ``$HERALD_COORDINATOR``).
        cycle_time_ms: Horovod's cycle time when ``HOROVOD_CYCLE_TIME`` is not set.
        local_size: workers on this host (``$HERALD_LOCAL_SIZE``); without horovodrun every
            worker must share one host.
    """

    kind = DenseSyncKind.HOROVOD

    def __init__(self, rank: int | None = None, num_workers: int | None = None,
                 coordinator: str | None = None,
                 cycle_time_ms: float = DEFAULT_CYCLE_TIME_MS,
                 local_size: int | None = None) -> None:
        self._hvd = _import_hvd()
        self._rendezvous: GlooRendezvous | None = None
        self._barriers = 0
        launched_by_horovod = "HOROVOD_GLOO_RENDEZVOUS_ADDR" in os.environ
        if not launched_by_horovod and num_workers is not None and num_workers > 1:
            if rank is None or coordinator is None:
                raise ValueError(
                    "Expected a rank and a coordinator address (HERALD_RANK, HERALD_COORDINATOR) "
                    f"for {num_workers} Horovod workers not started by horovodrun. Received: "
                    f"rank={rank}, coordinator={coordinator}")
            if local_size is not None and local_size != num_workers:
                raise ValueError(
                    "Horovod workers on several hosts need horovodrun to set up Gloo (herald-run "
                    f"--horovod). Received: {local_size} of {num_workers} workers on this host")
            for name, value in horovod_worker_env(rank, num_workers, coordinator,
                                                  cycle_time_ms).items():
                os.environ.setdefault(name, value)
            host, port = _split_address(coordinator)
            if rank == 0:
                self._rendezvous = GlooRendezvous(num_workers, host, port).start()
            else:
                _wait_for_port(host, port, RENDEZVOUS_TIMEOUT_S)
        os.environ.setdefault("HOROVOD_CYCLE_TIME", str(cycle_time_ms))
        self._hvd.init()
        if num_workers is not None and self._hvd.size() != num_workers:
            self.shutdown()
            raise ValueError(f"Horovod has {self._hvd.size()} workers, expected {num_workers}.")
        if rank is not None and self._hvd.rank() != rank:
            self.shutdown()
            raise ValueError(f"Horovod gave rank {self._hvd.rank()}, expected {rank}.")

    @property
    def rank(self) -> int:
        return int(self._hvd.rank())

    @property
    def num_workers(self) -> int:
        return int(self._hvd.size())

    @property
    def embedding_gradient_scale(self) -> float:
        return 1.0 / self.num_workers

    @property
    def reduces_dense_in_train_step(self) -> bool:
        return True

    def allreduce_dense(self, grads: Sequence[Any]) -> list[Any]:
        out = list(grads)
        present = list(iter_present(grads))
        if not present or self.num_workers == 1:
            return out
        reduced = self._hvd.grouped_allreduce([g for _, g in present], op=self._hvd.Average)
        for (i, _), g in zip(present, reduced, strict=True):
            out[i] = g
        return out

    def allreduce_sum(self, tensor: tf.Tensor, name: str | None = None) -> tf.Tensor:
        return self._hvd.allreduce(tensor, op=self._hvd.Sum, name=name)

    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None:
        if variables:
            self._hvd.broadcast_variables([tf_variable(v) for v in variables], root_rank)

    def barrier(self) -> None:
        self._barriers += 1
        self._hvd.allreduce(tf.zeros([], tf.float32), op=self._hvd.Sum,
                            name=f"herald_barrier_{self._barriers}")

    def callbacks(self) -> list[Any]:
        return [BroadcastInitialState(self)]

    def shutdown(self) -> None:
        if self._hvd is not None and self._hvd.is_initialized():
            self._hvd.shutdown()
        if self._rendezvous is not None:
            self._rendezvous.stop()
            self._rendezvous = None


class BroadcastInitialState(keras.callbacks.Callback):
    """Keras callback: at the start of ``fit``, every worker takes the chief's dense weights
    and optimizer state (the model and optimizer are built by then)."""

    def __init__(self, sync: DenseSync) -> None:
        super().__init__()
        self.sync = sync

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.sync.broadcast_model(self.model)
