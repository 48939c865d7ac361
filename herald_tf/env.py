"""Every ``HERALD_*`` environment variable herald_tf reads, read here and only here."""

from __future__ import annotations

import os

#: Directory holding libherald_core.so and _herald_ops.so (default: herald_tf/lib).
LIB_DIR_VAR = "HERALD_LIB_DIR"


def lib_dir() -> str:
    """Directory of the native libraries: ``$HERALD_LIB_DIR`` or the package's ``lib/``."""
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    return os.environ.get(LIB_DIR_VAR, default)

#: Cluster token of the parameter servers, when not given by --token / --token-file.
PS_TOKEN_VAR = "HERALD_PS_TOKEN"


def ps_token() -> str | None:
    """The cluster token from ``$HERALD_PS_TOKEN``, or None when unset or empty."""
    return os.environ.get(PS_TOKEN_VAR) or None

# --- Launch (herald-run, herald_tf/launch): what the launcher tells each worker process. ---

#: Comma-separated ``host:port`` of every parameter-server shard, shard i at index i.
PS_ADDRS_VAR = "HERALD_PS_ADDRS"
#: This worker's rank, 0 .. HERALD_NUM_WORKERS - 1 (rank 0 is the chief).
RANK_VAR = "HERALD_RANK"
#: Number of workers in the job (the world size of the dense sync).
NUM_WORKERS_VAR = "HERALD_NUM_WORKERS"
#: This worker's index among the workers on its host (e.g. to pick a GPU).
LOCAL_RANK_VAR = "HERALD_LOCAL_RANK"
#: Number of workers on this worker's host.
LOCAL_SIZE_VAR = "HERALD_LOCAL_SIZE"
#: The cluster token every PS request carries (the launcher also sets HERALD_PS_TOKEN).
TOKEN_VAR = "HERALD_TOKEN"
#: ``host:port`` on the chief's host reserved for a dense-sync rendezvous (e.g. Gloo).
COORDINATOR_VAR = "HERALD_COORDINATOR"
#: Set to the launcher's pid in every process herald-run starts (tells a child it was launched).
LAUNCHER_PID_VAR = "HERALD_LAUNCHER_PID"


def _int_var(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Expected an integer in ${name}. Received: {name}={text!r}") from None


def ps_addresses() -> tuple[str, ...]:
    """The PS shard addresses from ``$HERALD_PS_ADDRS`` (empty when unset)."""
    text = os.environ.get(PS_ADDRS_VAR, "")
    return tuple(a.strip() for a in text.split(",") if a.strip())


def rank() -> int | None:
    """This worker's rank from ``$HERALD_RANK``, or None when not launched by herald-run."""
    return _int_var(RANK_VAR)


def num_workers() -> int | None:
    """The number of workers from ``$HERALD_NUM_WORKERS``, or None when unset."""
    return _int_var(NUM_WORKERS_VAR)


def local_rank() -> int | None:
    """This worker's index on its host from ``$HERALD_LOCAL_RANK``, or None when unset."""
    return _int_var(LOCAL_RANK_VAR)


def local_size() -> int | None:
    """The number of workers on this host from ``$HERALD_LOCAL_SIZE``, or None when unset."""
    return _int_var(LOCAL_SIZE_VAR)


def cluster_token() -> str | None:
    """The cluster token from ``$HERALD_TOKEN`` (else ``$HERALD_PS_TOKEN``), or None."""
    return os.environ.get(TOKEN_VAR) or ps_token()


def coordinator() -> str | None:
    """The dense-sync rendezvous ``host:port`` from ``$HERALD_COORDINATOR``, or None."""
    return os.environ.get(COORDINATOR_VAR) or None


def launcher_pid() -> int | None:
    """The pid of the herald-run that started this process, or None."""
    return _int_var(LAUNCHER_PID_VAR)

# --- Dense sync (herald_tf/dense): which backend combines the workers' dense gradients. ---

#: Dense sync backend of ``make_dense_sync()`` without a name: none, horovod or tf_distribute.
DENSE_SYNC_VAR = "HERALD_DENSE_SYNC"


def dense_sync_name() -> str | None:
    """The dense sync backend named by ``$HERALD_DENSE_SYNC``, or None when unset or empty."""
    return os.environ.get(DENSE_SYNC_VAR) or None
