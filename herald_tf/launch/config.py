"""Typed cluster configuration of herald-run: the seed's ``dist.yml`` and TF_CONFIG cluster specs.

Both formats become one frozen :class:`ClusterSpec` (PS endpoints in shard order, worker endpoints
in rank order, a coordinator endpoint and, in TF_CONFIG mode, the local task). Parsing reads only
the mapping it is given and never touches the network or the file system (except
:func:`load_cluster`, which reads the named file); a bad field raises :class:`ClusterConfigError`
whose message names the field, e.g. ``dist.yml: nodes[1].servers: expected ...``.

``dist.yml`` (Hetu's format, as the seed's ``runner.py -c dist.yml`` reads it)::

    nodes:
      - host: localhost      # loopback hosts run as local processes, others through ssh
        servers: 2           # parameter-server shards on this host
        workers: 2           # worker processes on this host
        chief: true          # rank 0 and the coordinator live here (default: the first node
                             # with workers, also when the chief has none)
        server_ports: [0, 0] # optional; 0 = bind a free port (local hosts only)
        worker_ports: [0, 0] # optional; the ports in the workers' TF_CONFIG
    coordinator_port: 0      # optional; the HERALD_COORDINATOR port on rank 0's host

TF_CONFIG (``{"cluster": {"chief": [...], "worker": [...], "ps": [...]}, "task": {...}}``): chief
(if any) is rank 0, then the workers in order; ``ps`` entries are the shards in order. With a
``task`` the launcher runs that one task (one process per pod, as Kubeflow's TFJob starts it);
without, it runs the whole cluster.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from herald_tf.errors import InvalidArgumentError

#: Ports of remote hosts when the config gives none (port 0 needs a local host to read it back).
DEFAULT_PS_PORT = 23400
DEFAULT_WORKER_PORT = 23500
DEFAULT_COORDINATOR_PORT = 23399

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback", "::1"})


class ClusterConfigError(InvalidArgumentError):
    """A cluster config is malformed; the message names the source and the bad field."""


def is_local_host(host: str) -> bool:
    """True for loopback hosts (localhost, 127.0.0.0/8, ::1): these run as local processes."""
    return host in _LOOPBACK_NAMES or host.startswith("127.")


@enum.unique
class Role(enum.StrEnum):
    """What a launched process is."""

    PS = "ps"
    WORKER = "worker"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A ``host:port``; port 0 means "bind a free port and report it" (local hosts only)."""

    host: str
    port: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host or any(c.isspace() for c in self.host):
            raise ClusterConfigError(f"Expected a host name without spaces. Received: "
                                     f"host={self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
                0 <= self.port <= 65535):
            raise ClusterConfigError(f"Expected a port in 0..65535. Received: port={self.port!r}")

    @property
    def local(self) -> bool:
        """Whether the host is a loopback host."""
        return is_local_host(self.host)

    @property
    def connect_host(self) -> str:
        """The host to connect to: 127.0.0.1 for ``localhost`` names, else the host."""
        return "127.0.0.1" if self.host in ("localhost", "ip6-localhost") else self.host

    @property
    def address(self) -> str:
        """``host:port`` to connect to (IPv6 literals in brackets)."""
        host = self.connect_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Task:
    """The one task this process runs in TF_CONFIG mode: a PS shard or a worker rank."""

    role: Role
    index: int


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """A whole cluster: PS shards in order, workers in rank order, the coordinator.

    Args:
      ps: endpoint of every parameter-server shard, shard i at index i (may be empty).
      workers: endpoint of every worker, rank r at index r (at least one).
      coordinator: the rendezvous endpoint on rank 0's host (``HERALD_COORDINATOR``).
      has_chief: TF_CONFIG had a ``chief`` job (rank 0 is then the chief, not ``worker 0``).
      task: the local task in TF_CONFIG mode, or None to run the whole cluster.
      source: where the config came from, for messages.
    """

    ps: tuple[Endpoint, ...]
    workers: tuple[Endpoint, ...]
    coordinator: Endpoint
    has_chief: bool = False
    task: Task | None = None
    source: str = "cluster config"

    def __post_init__(self) -> None:
        if not self.workers:
            raise ClusterConfigError(f"{self.source}: expected at least one worker. Received: "
                                     "0 workers")
        hosts = [e.host for e in (*self.ps, *self.workers)]
        local = sorted({h for h in hosts if is_local_host(h)})
        remote = sorted({h for h in hosts if not is_local_host(h)})
        if local and remote and self.task is None:
            raise ClusterConfigError(
                f"{self.source}: loopback hosts {local} cannot be mixed with remote hosts "
                f"{remote}: the remote processes could not reach them; name this machine by an "
                "address the other hosts can reach")
        if self.task is None:
            for kind, endpoints in (("ps", self.ps), ("worker", self.workers)):
                for i, e in enumerate(endpoints):
                    if e.port == 0 and not e.local:
                        raise ClusterConfigError(
                            f"{self.source}: {kind} {i} on remote host {e.host!r} has port 0: "
                            "only local hosts can bind a free port and report it; give a port")
        seen: dict[tuple[str, int], str] = {}
        named = [("ps", i, e) for i, e in enumerate(self.ps)]
        named += [("worker", i, e) for i, e in enumerate(self.workers)]
        named.append(("coordinator", 0, self.coordinator))
        for kind, i, e in named:
            if e.port == 0:
                continue
            key = (e.connect_host, e.port)
            if key in seen:
                name = kind if kind == "coordinator" else f"{kind} {i}"
                raise ClusterConfigError(f"{self.source}: {name} uses {e.address}, already "
                                         f"used by {seen[key]}")
            seen[key] = kind if kind == "coordinator" else f"{kind} {i}"
        if self.task is not None:
            count = len(self.ps) if self.task.role is Role.PS else len(self.workers)
            if not 0 <= self.task.index < count:
                raise ClusterConfigError(f"{self.source}: task.index: expected 0..{count - 1} for "
                                         f"{self.task.role.value}. Received: {self.task.index}")

    @property
    def num_workers(self) -> int:
        """World size of the dense sync."""
        return len(self.workers)

    @property
    def local(self) -> bool:
        """Every host is a loopback host (no ssh needed)."""
        return all(e.local for e in (*self.ps, *self.workers))


def _fail(source: str, field: str, expected: str, value: Any) -> ClusterConfigError:
    return ClusterConfigError(f"{source}: {field}: expected {expected}. Received: {value!r}")


def _count(source: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(source, field, "a non-negative integer", value)
    return value


def _port(source: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise _fail(source, field, "a port in 0..65535", value)
    return value


def _host(source: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise _fail(source, field, "a host name without spaces", value)
    return value


def _ports(source: str, field: str, value: Any, count: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count:
        raise _fail(source, field, f"a list of {count} ports (one per process)", value)
    return tuple(_port(source, f"{field}[{i}]", p) for i, p in enumerate(value))


@dataclasses.dataclass(frozen=True)
class Node:
    """One ``nodes:`` entry of a dist.yml: a host and how many servers and workers it runs."""

    host: str
    servers: int = 0
    workers: int = 0
    chief: bool = False
    server_ports: tuple[int, ...] | None = None
    worker_ports: tuple[int, ...] | None = None


_NODE_KEYS = ("host", "servers", "workers", "chief", "server_ports", "worker_ports")


def _parse_node(source: str, i: int, raw: Any) -> Node:
    field = f"nodes[{i}]"
    if not isinstance(raw, Mapping):
        raise _fail(source, field, "a mapping with host, servers, workers, chief", raw)
    unknown = sorted(set(raw) - set(_NODE_KEYS))
    if unknown:
        raise _fail(source, f"{field}.{unknown[0]}", f"one of the keys {list(_NODE_KEYS)}",
                    unknown[0])
    if "host" not in raw:
        raise _fail(source, f"{field}.host", "a host name", None)
    host = _host(source, f"{field}.host", raw["host"])
    servers = _count(source, f"{field}.servers", raw.get("servers", 0))
    workers = _count(source, f"{field}.workers", raw.get("workers", 0))
    chief = raw.get("chief", False)
    if not isinstance(chief, bool):
        raise _fail(source, f"{field}.chief", "true or false", chief)
    return Node(host, servers, workers, chief,
                _ports(source, f"{field}.server_ports", raw.get("server_ports"), servers),
                _ports(source, f"{field}.worker_ports", raw.get("worker_ports"), workers))


def parse_dist_config(data: Any, source: str = "dist.yml") -> ClusterSpec:
    """Turns a parsed dist.yml mapping into a :class:`ClusterSpec` (no side effects).

    Ranks: the chief node's workers first (rank 0 is its first worker), then the other nodes'
    workers in file order. Shards: every node's servers in file order. The chief is the node with
    ``chief: true`` (at most one), else the first node with workers. A chief with ``workers: 0``
    is valid, as in the seed (where it is the host of the PS scheduler, which herald does not
    have): it runs only its servers, and rank 0 and the coordinator go to the first node with
    workers, as without a chief. Ports not given are 0 on loopback hosts (bound at start) and
    ``DEFAULT_*_PORT + i`` on remote hosts.
    """
    if not isinstance(data, Mapping):
        raise _fail(source, "top level", "a mapping with a 'nodes' list", data)
    unknown = sorted(set(data) - {"nodes", "coordinator_port"})
    if unknown:
        raise _fail(source, unknown[0], "only the keys 'nodes' and 'coordinator_port'",
                    unknown[0])
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _fail(source, "nodes", "a non-empty list of nodes", raw_nodes)
    nodes = [_parse_node(source, i, raw) for i, raw in enumerate(raw_nodes)]
    chiefs = [i for i, n in enumerate(nodes) if n.chief]
    if len(chiefs) > 1:
        raise _fail(source, f"nodes[{chiefs[1]}].chief", "exactly one node with chief: true "
                    f"(nodes[{chiefs[0]}] is already chief)", True)
    with_workers = [i for i, n in enumerate(nodes) if n.workers > 0]
    if not with_workers:
        field = f"nodes[{chiefs[0]}].workers" if chiefs else "nodes[*].workers"
        raise _fail(source, field, "at least one worker in the cluster", 0)
    # rank 0's node: the chief, unless it runs no worker (valid in the seed, whose chief hosts
    # the PS scheduler); then the first node with workers, as without a chief
    rank0 = chiefs[0] if chiefs and nodes[chiefs[0]].workers else with_workers[0]
    coordinator_port = data.get("coordinator_port")
    if coordinator_port is not None:
        coordinator_port = _port(source, "coordinator_port", coordinator_port)

    def port(node: Node, given: tuple[int, ...] | None, j: int, base: int) -> int:
        if given is not None:
            return given[j]
        return 0 if is_local_host(node.host) else base + j

    ps = tuple(Endpoint(n.host, port(n, n.server_ports, j, DEFAULT_PS_PORT))
               for n in nodes for j in range(n.servers))
    order = [rank0] + [i for i in range(len(nodes)) if i != rank0]
    workers = tuple(Endpoint(nodes[i].host, port(nodes[i], nodes[i].worker_ports, j,
                                                 DEFAULT_WORKER_PORT))
                    for i in order for j in range(nodes[i].workers))
    rank0_host = nodes[rank0].host
    if coordinator_port is None:
        coordinator_port = 0 if is_local_host(rank0_host) else DEFAULT_COORDINATOR_PORT
    return ClusterSpec(ps, workers, Endpoint(rank0_host, coordinator_port), source=source)


def _parse_address(source: str, field: str, value: Any) -> Endpoint:
    if not isinstance(value, str) or ":" not in value:
        raise _fail(source, field, "'host:port'", value)
    host, _, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise _fail(source, field, "'host:port' with an integer port", value) from None
    return Endpoint(_host(source, field, host), _port(source, field, port))


_TF_JOBS = ("chief", "worker", "ps")


def parse_tf_config(data: Any, source: str = "TF_CONFIG") -> ClusterSpec:
    """Turns a parsed TF_CONFIG mapping into a :class:`ClusterSpec` (no side effects).

    ``cluster.chief`` (at most one) is rank 0, then ``cluster.worker`` in order; ``cluster.ps``
    are the shards. ``task`` (``{"type": "chief"|"worker"|"ps", "index": i}``) selects the one
    task to run; without it the whole cluster runs. Other jobs (``evaluator``) are refused. The
    coordinator is on the rank-0 host at the first port above rank 0's that no task of that host
    uses (TF's own server keeps rank 0's port; every pod computes the same address); a whole
    cluster on loopback gets a free port at launch instead.
    """
    if not isinstance(data, Mapping):
        raise _fail(source, "top level", "a mapping with a 'cluster' key", data)
    unknown = sorted(set(data) - {"cluster", "task", "environment", "rpc_layer"})
    if unknown:
        raise _fail(source, unknown[0], "only the keys cluster, task, environment, rpc_layer",
                    unknown[0])
    cluster = data.get("cluster")
    if not isinstance(cluster, Mapping) or not cluster:
        raise _fail(source, "cluster", "a mapping of job name to a list of 'host:port'", cluster)
    for job in cluster:
        if job not in _TF_JOBS:
            raise _fail(source, f"cluster.{job}", f"one of the jobs {list(_TF_JOBS)} (herald-run "
                        "does not run evaluators or other jobs)", job)
    jobs: dict[str, tuple[Endpoint, ...]] = {}
    for job in _TF_JOBS:
        raw = cluster.get(job, [])
        if not isinstance(raw, list):
            raise _fail(source, f"cluster.{job}", "a list of 'host:port'", raw)
        jobs[job] = tuple(_parse_address(source, f"cluster.{job}[{i}]", a)
                          for i, a in enumerate(raw))
    if len(jobs["chief"]) > 1:
        raise _fail(source, "cluster.chief", "at most one chief", list(cluster["chief"]))
    workers = jobs["chief"] + jobs["worker"]
    if not workers:
        raise _fail(source, "cluster.worker", "at least one chief or worker", [])
    task = None
    raw_task = data.get("task")
    if raw_task is not None and raw_task != {}:
        if not isinstance(raw_task, Mapping):
            raise _fail(source, "task", "a mapping with type and index", raw_task)
        kind = raw_task.get("type")
        if kind not in _TF_JOBS:
            raise _fail(source, "task.type", f"one of {list(_TF_JOBS)}", kind)
        index = raw_task.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise _fail(source, "task.index", "a non-negative integer", index)
        if index >= len(jobs[kind]):
            raise _fail(source, "task.index", f"an index into cluster.{kind} (0.."
                        f"{len(jobs[kind]) - 1})", index)
        if kind == "ps":
            task = Task(Role.PS, index)
        else:
            task = Task(Role.WORKER, index + (len(jobs["chief"]) if kind == "worker" else 0))
    rank0 = workers[0]
    if task is None and rank0.local:
        coordinator = Endpoint(rank0.host, 0)  # one launcher starts everything: a free port
    else:
        used = {e.port for e in (*jobs["ps"], *workers) if e.connect_host == rank0.connect_host}
        port = rank0.port + 1
        while port in used:
            port += 1
        coordinator = Endpoint(rank0.host, port if 0 < port <= 65535 else 0)
    return ClusterSpec(jobs["ps"], workers, coordinator, has_chief=bool(jobs["chief"]),
                       task=task, source=source)


def parse_cluster(data: Any, source: str) -> ClusterSpec:
    """Parses either format, told apart by the top-level key (``nodes`` or ``cluster``)."""
    if isinstance(data, Mapping) and "nodes" in data:
        return parse_dist_config(data, source)
    if isinstance(data, Mapping) and "cluster" in data:
        return parse_tf_config(data, source)
    raise _fail(source, "top level", "a dist.yml ('nodes:' list) or a TF_CONFIG cluster spec "
                "('cluster:' mapping)", data if not isinstance(data, Mapping) else sorted(data))


def load_cluster(path: str | None = None,
                 environ: Mapping[str, str] | None = None) -> ClusterSpec:
    """Reads the cluster from ``path`` (YAML or JSON), else from ``$TF_CONFIG`` in ``environ``."""
    if path is not None:
        import yaml  # noqa: PLC0415 (JSON is YAML; only this path needs it)

        try:
            with open(path) as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ClusterConfigError(f"{path}: cannot read the cluster config: {e}") from None
        except yaml.YAMLError as e:
            raise ClusterConfigError(f"{path}: not valid YAML/JSON: {e}") from None
        return parse_cluster(data, os.path.basename(path))
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        raise ClusterConfigError("Expected a cluster config: pass -c dist.yml (or a TF_CONFIG "
                                 "file), or set $TF_CONFIG")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterConfigError(f"$TF_CONFIG: not valid JSON: {e}") from None
    return parse_tf_config(data, "$TF_CONFIG")


def tf_config_for(cluster: ClusterSpec, rank: int,
                  worker_addresses: Sequence[str] | None = None) -> dict[str, Any]:
    """The TF_CONFIG a worker gets for MultiWorkerMirroredStrategy (PS jobs left out).

    herald's parameter servers are not TensorFlow servers, so ``ps`` is dropped; with a chief the
    cluster keeps ``chief`` + ``worker`` as given, else every worker is a ``worker``.
    """
    addresses = list(worker_addresses or [e.address for e in cluster.workers])
    if cluster.has_chief:
        spec: dict[str, Any] = {"chief": addresses[:1], "worker": addresses[1:]}
        task = {"type": "chief", "index": 0} if rank == 0 else {"type": "worker",
                                                                "index": rank - 1}
        if not spec["worker"]:
            del spec["worker"]
    else:
        spec = {"worker": addresses}
        task = {"type": "worker", "index": rank}
    return {"cluster": spec, "task": task}
