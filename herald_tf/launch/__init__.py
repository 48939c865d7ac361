"""herald-run: launches parameter servers and training workers from a cluster config.

The seed's ``dist.yml`` and TF_CONFIG-style cluster specs both become a typed
:class:`ClusterSpec` (:mod:`.config`); :func:`build_process_list` turns it into the concrete
processes (:mod:`.plan`); :mod:`.remote` writes the ssh commands of remote hosts; :mod:`.runner`
starts and supervises local processes; :mod:`.cli` is the ``herald-run`` entry point. What a
worker is told (PS addresses, rank, world size, token, coordinator) is named in
:mod:`herald_tf.env`.
"""

from herald_tf.launch.config import (
    ClusterConfigError,
    ClusterSpec,
    Endpoint,
    Node,
    Role,
    Task,
    load_cluster,
    parse_cluster,
    parse_dist_config,
    parse_tf_config,
)
from herald_tf.launch.plan import LaunchOptions, ProcessSpec, build_process_list
from herald_tf.launch.runner import LaunchError, run_cluster

__all__ = [
    "ClusterConfigError",
    "ClusterSpec",
    "Endpoint",
    "LaunchError",
    "LaunchOptions",
    "Node",
    "ProcessSpec",
    "Role",
    "Task",
    "build_process_list",
    "load_cluster",
    "parse_cluster",
    "parse_dist_config",
    "parse_tf_config",
    "run_cluster",
]
