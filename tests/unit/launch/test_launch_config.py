"""Cluster configs: the seed's dist.yml and TF_CONFIG specs, and the errors bad ones give."""

from __future__ import annotations

import json
from typing import Any

import pytest

from herald_tf.launch.config import (
    DEFAULT_COORDINATOR_PORT,
    DEFAULT_PS_PORT,
    DEFAULT_WORKER_PORT,
    ClusterConfigError,
    ClusterSpec,
    Endpoint,
    Role,
    Task,
    is_local_host,
    load_cluster,
    parse_cluster,
    parse_dist_config,
    parse_tf_config,
    tf_config_for,
)


def test_seed_style_local_dist_yml_gives_shards_and_ranks_with_port_zero() -> None:
    spec = parse_dist_config({"nodes": [{"host": "localhost", "servers": 2, "workers": 3,
                                         "chief": True}]})
    assert spec.ps == (Endpoint("localhost", 0), Endpoint("localhost", 0))
    assert spec.workers == (Endpoint("localhost", 0),) * 3
    assert spec.coordinator == Endpoint("localhost", 0)
    assert spec.num_workers == 3 and spec.local and spec.task is None


def test_chief_node_workers_come_first_in_rank_order() -> None:
    spec = parse_dist_config({"nodes": [
        {"host": "a", "servers": 1, "workers": 1},
        {"host": "b", "servers": 1, "workers": 2, "chief": True},
    ]})
    assert [e.host for e in spec.workers] == ["b", "b", "a"]
    assert [e.host for e in spec.ps] == ["a", "b"]
    assert spec.coordinator == Endpoint("b", DEFAULT_COORDINATOR_PORT)


def test_remote_hosts_get_default_ports_unless_given() -> None:
    spec = parse_dist_config({"nodes": [
        {"host": "a", "servers": 2, "workers": 2, "chief": True},
        {"host": "b", "servers": 1, "workers": 1, "server_ports": [7000],
         "worker_ports": [7100]},
    ], "coordinator_port": 7999})
    assert [e.port for e in spec.ps] == [DEFAULT_PS_PORT, DEFAULT_PS_PORT + 1, 7000]
    assert [e.port for e in spec.workers] == [DEFAULT_WORKER_PORT, DEFAULT_WORKER_PORT + 1, 7100]
    assert spec.coordinator == Endpoint("a", 7999)
    assert not spec.local


def test_without_a_chief_the_first_node_with_workers_is_chief() -> None:
    spec = parse_dist_config({"nodes": [{"host": "a", "servers": 1},
                                        {"host": "b", "workers": 1},
                                        {"host": "c", "workers": 1}]})
    assert [e.host for e in spec.workers] == ["b", "c"]
    assert spec.coordinator.host == "b"


def test_a_seed_chief_that_runs_no_worker_is_accepted_and_runs_only_its_servers() -> None:
    # the seed's runner puts its PS scheduler on the chief, which needs no worker there
    spec = parse_dist_config({"nodes": [{"host": "a", "servers": 2, "chief": True},
                                        {"host": "b", "servers": 1, "workers": 2},
                                        {"host": "c", "workers": 1}]})
    assert [e.host for e in spec.ps] == ["a", "a", "b"]
    assert [e.host for e in spec.workers] == ["b", "b", "c"]
    assert spec.coordinator == Endpoint("b", DEFAULT_COORDINATOR_PORT)


def test_a_chief_without_workers_in_a_cluster_without_workers_names_the_chief() -> None:
    with pytest.raises(ClusterConfigError, match=r"nodes\[1\]\.workers: expected at least one "
                       "worker in the cluster"):
        parse_dist_config({"nodes": [{"host": "a", "servers": 1},
                                     {"host": "b", "servers": 1, "chief": True}]})


@pytest.mark.parametrize("data, field", [
    ([], "top level"),
    ({"nodes": []}, "nodes"),
    ({"nodes": "localhost"}, "nodes"),
    ({"nodes": [{"servers": 1, "workers": 1}]}, "nodes[0].host"),
    ({"nodes": [{"host": "", "workers": 1}]}, "nodes[0].host"),
    ({"nodes": [{"host": "localhost", "workers": "two"}]}, "nodes[0].workers"),
    ({"nodes": [{"host": "localhost", "workers": 1, "servers": -1}]}, "nodes[0].servers"),
    ({"nodes": [{"host": "localhost", "workers": True}]}, "nodes[0].workers"),
    ({"nodes": [{"host": "localhost", "workers": 1, "chief": "yes"}]}, "nodes[0].chief"),
    ({"nodes": [{"host": "localhost", "workers": 1, "gpus": 2}]}, "nodes[0].gpus"),
    ({"nodes": [{"host": "localhost", "workers": 1}, {"host": "localhost", "workers": 1,
                                                      "chief": True, "servers": 0},
                {"host": "localhost", "workers": 1, "chief": True}]}, "nodes[2].chief"),
    ({"nodes": [{"host": "localhost", "servers": 1, "chief": True}]}, "nodes[0].workers"),
    ({"nodes": [{"host": "localhost", "servers": 1}]}, "nodes[*].workers"),
    ({"nodes": [{"host": "localhost", "servers": 2, "workers": 1, "server_ports": [1]}]},
     "nodes[0].server_ports"),
    ({"nodes": [{"host": "localhost", "workers": 1, "worker_ports": [70000]}]},
     "nodes[0].worker_ports[0]"),
    ({"nodes": [{"host": "localhost", "workers": 1}], "coordinator_port": "x"},
     "coordinator_port"),
    ({"nodes": [{"host": "localhost", "workers": 1}], "scheduler": "x"}, "scheduler"),
])
def test_bad_dist_yml_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(ClusterConfigError) as err:
        parse_dist_config(data, "dist.yml")
    assert str(err.value).startswith(f"dist.yml: {field}:"), str(err.value)


def test_loopback_hosts_cannot_mix_with_remote_hosts() -> None:
    with pytest.raises(ClusterConfigError, match="cannot be mixed with remote hosts"):
        parse_dist_config({"nodes": [{"host": "localhost", "servers": 1, "workers": 1},
                                     {"host": "node2", "workers": 1}]})


def test_remote_port_zero_is_refused() -> None:
    with pytest.raises(ClusterConfigError, match="remote host 'node1' has port 0"):
        parse_dist_config({"nodes": [{"host": "node1", "servers": 1, "workers": 1,
                                      "server_ports": [0]}]})


def test_two_processes_on_one_address_are_refused() -> None:
    with pytest.raises(ClusterConfigError, match="worker 1 uses node1:7000, already used by ps 0"):
        parse_dist_config({"nodes": [{"host": "node1", "servers": 1, "workers": 2,
                                      "server_ports": [7000], "worker_ports": [6999, 7000]}]})


def test_tf_config_chief_is_rank_zero_and_task_maps_to_rank() -> None:
    data = {"cluster": {"chief": ["c:1000"], "worker": ["w0:1000", "w1:1000"],
                        "ps": ["p0:2000", "p1:2000"]},
            "task": {"type": "worker", "index": 1}}
    spec = parse_tf_config(data)
    assert [e.address for e in spec.workers] == ["c:1000", "w0:1000", "w1:1000"]
    assert [e.address for e in spec.ps] == ["p0:2000", "p1:2000"]
    assert spec.task == Task(Role.WORKER, 2)
    assert spec.has_chief and spec.coordinator == Endpoint("c", 1001)
    assert parse_tf_config({**data, "task": {"type": "chief", "index": 0}}).task == Task(
        Role.WORKER, 0)
    assert parse_tf_config({**data, "task": {"type": "ps", "index": 1}}).task == Task(Role.PS, 1)


def test_tf_config_without_task_runs_the_whole_cluster() -> None:
    spec = parse_tf_config({"cluster": {"worker": ["localhost:5000", "localhost:5001"],
                                        "ps": ["localhost:0"]}})
    assert spec.task is None and not spec.has_chief and spec.local
    assert spec.coordinator == Endpoint("localhost", 0)  # a free port at launch


def test_tf_config_coordinator_skips_ports_of_tasks_on_the_rank0_host() -> None:
    cluster = {"chief": ["h:5000"], "worker": ["h:5001", "other:5002"], "ps": ["h:5002"]}
    for task in ({"type": "ps", "index": 0}, {"type": "worker", "index": 1}):
        spec = parse_tf_config({"cluster": cluster, "task": task})
        assert spec.coordinator == Endpoint("h", 5003)


def test_coordinator_port_must_not_collide() -> None:
    with pytest.raises(ClusterConfigError, match="coordinator uses node1:7000, already used by "
                                                 "ps 0"):
        parse_dist_config({"nodes": [{"host": "node1", "servers": 1, "workers": 1,
                                      "server_ports": [7000]}], "coordinator_port": 7000})


def test_tf_config_ipv6_address_in_brackets() -> None:
    spec = parse_tf_config({"cluster": {"worker": ["[::1]:5000"]}})
    assert spec.workers[0] == Endpoint("::1", 5000)
    assert spec.workers[0].address == "[::1]:5000"


@pytest.mark.parametrize("data, field", [
    ({"cluster": {}}, "cluster"),
    ({"cluster": {"worker": ["a:1"], "evaluator": ["e:1"]}}, "cluster.evaluator"),
    ({"cluster": {"worker": "a:1"}}, "cluster.worker"),
    ({"cluster": {"worker": ["a"]}}, "cluster.worker[0]"),
    ({"cluster": {"worker": ["a:b"]}}, "cluster.worker[0]"),
    ({"cluster": {"worker": ["a:99999"]}}, "cluster.worker[0]"),
    ({"cluster": {"ps": ["a:1"]}}, "cluster.worker"),
    ({"cluster": {"chief": ["a:1", "b:1"]}}, "cluster.chief"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator"}}, "task.type"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}, "task.index"),
    ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}, "task.index"),
    ({"cluster": {"worker": ["a:1"]}, "extra": 1}, "extra"),
])
def test_bad_tf_config_names_the_field(data: Any, field: str) -> None:
    with pytest.raises(ClusterConfigError) as err:
        parse_tf_config(data, "TF_CONFIG")
    assert str(err.value).startswith(f"TF_CONFIG: {field}:"), str(err.value)


def test_format_is_told_apart_by_top_level_key() -> None:
    assert parse_cluster({"nodes": [{"host": "localhost", "workers": 1}]}, "x").num_workers == 1
    assert parse_cluster({"cluster": {"worker": ["a:1"]}}, "x").num_workers == 1
    with pytest.raises(ClusterConfigError, match="x: top level: expected a dist.yml"):
        parse_cluster({"hosts": []}, "x")


def test_load_cluster_reads_yaml_json_and_the_env_var(tmp_path: Any) -> None:
    (tmp_path / "dist.yml").write_text("nodes:\n  - host: localhost\n    servers: 1\n"
                                       "    workers: 2\n    chief: true\n")
    assert load_cluster(str(tmp_path / "dist.yml")).num_workers == 2
    tf_config = {"cluster": {"worker": ["localhost:1", "localhost:2"]},
                 "task": {"type": "worker", "index": 1}}
    (tmp_path / "tf.json").write_text(json.dumps(tf_config))
    assert load_cluster(str(tmp_path / "tf.json")).task == Task(Role.WORKER, 1)
    spec = load_cluster(None, {"TF_CONFIG": json.dumps(tf_config)})
    assert spec.task == Task(Role.WORKER, 1) and spec.source == "$TF_CONFIG"


@pytest.mark.parametrize("environ, match", [
    ({}, "Expected a cluster config"),
    ({"TF_CONFIG": "{nope"}, r"\$TF_CONFIG: not valid JSON"),
])
def test_load_cluster_errors(environ: dict[str, str], match: str) -> None:
    with pytest.raises(ClusterConfigError, match=match):
        load_cluster(None, environ)


def test_load_cluster_missing_or_broken_file(tmp_path: Any) -> None:
    with pytest.raises(ClusterConfigError, match="cannot read the cluster config"):
        load_cluster(str(tmp_path / "missing.yml"))
    (tmp_path / "bad.yml").write_text("nodes: [\n")
    with pytest.raises(ClusterConfigError, match="not valid YAML/JSON"):
        load_cluster(str(tmp_path / "bad.yml"))


def test_shipped_example_configs_parse() -> None:
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "config")
    assert load_cluster(os.path.join(root, "dist.yml")).local
    assert load_cluster(os.path.join(root, "dist_remote.yml")).num_workers == 4
    assert load_cluster(os.path.join(root, "tf_config.json")).has_chief
    assert load_cluster(os.path.join(root, "tf_config_pod.json")).task == Task(Role.WORKER, 1)


def test_tf_config_for_workers_drops_ps_and_keeps_chief() -> None:
    with_chief = parse_tf_config({"cluster": {"chief": ["c:1"], "worker": ["w:1"],
                                              "ps": ["p:1"]}})
    assert tf_config_for(with_chief, 0) == {"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
                                            "task": {"type": "chief", "index": 0}}
    assert tf_config_for(with_chief, 1)["task"] == {"type": "worker", "index": 0}
    plain = parse_dist_config({"nodes": [{"host": "n", "workers": 2}]})
    assert tf_config_for(plain, 1) == {"cluster": {"worker": [f"n:{DEFAULT_WORKER_PORT}",
                                                              f"n:{DEFAULT_WORKER_PORT + 1}"]},
                                       "task": {"type": "worker", "index": 1}}


def test_loopback_detection_and_spec_validation() -> None:
    assert is_local_host("localhost") and is_local_host("127.0.0.2") and is_local_host("::1")
    assert not is_local_host("node1") and not is_local_host("10.1.2.3")
    assert Endpoint("localhost", 5).address == "127.0.0.1:5"
    with pytest.raises(ClusterConfigError, match="expected at least one worker"):
        ClusterSpec((), (), Endpoint("localhost"))
    with pytest.raises(ClusterConfigError, match="Expected a port"):
        Endpoint("localhost", -1)
