"""build_process_list: the exact argv and env of every process, for each kind of launch."""

from __future__ import annotations

import json

import pytest

from herald_tf import env
from herald_tf.launch.config import ClusterConfigError, Role, parse_dist_config, parse_tf_config
from herald_tf.launch.plan import PS_MODULE, LaunchOptions, build_process_list

OPTIONS = LaunchOptions(command=("python", "train.py", "--nepoch", "1"), python="/py",
                        run_dir="/run", checkpoint_dir="/ckpt", ps_args=("--push-window", "4"))


def _local(servers: int = 2, workers: int = 2):  # noqa: ANN202
    return parse_dist_config({"nodes": [{"host": "localhost", "servers": servers,
                                         "workers": workers, "chief": True,
                                         "worker_ports": [5000 + i for i in range(workers)]}],
                              "coordinator_port": 4999})


def test_local_cluster_lists_ps_then_workers_with_exact_argv() -> None:
    specs = build_process_list(_local(), OPTIONS)
    assert [(s.role, s.rank, s.name) for s in specs] == [
        (Role.PS, 0, "ps 0"), (Role.PS, 1, "ps 1"), (Role.WORKER, 0, "worker 0"),
        (Role.WORKER, 1, "worker 1")]
    assert specs[1].argv == ("/py", "-m", PS_MODULE, "--address", "127.0.0.1", "--port", "0",
                             "--shard-index", "1", "--num-shards", "2", "--num-workers", "2",
                             "--checkpoint-dir", "/ckpt", "--port-file", "/run/ps-1.port",
                             "--push-window", "4")
    assert specs[1].port_file == "/run/ps-1.port" and not specs[1].remote
    assert specs[2].argv == OPTIONS.command


def test_worker_env_tells_ps_addresses_rank_world_size_and_tf_config() -> None:
    specs = build_process_list(_local(), OPTIONS, ps_ports=[7001, 7002])
    w1 = specs[3]
    assert dict(w1.env) == {
        "PYTHONUNBUFFERED": "1",
        env.PS_ADDRS_VAR: "127.0.0.1:7001,127.0.0.1:7002",
        env.RANK_VAR: "1",
        env.NUM_WORKERS_VAR: "2",
        env.LOCAL_RANK_VAR: "1",
        env.LOCAL_SIZE_VAR: "2",
        env.COORDINATOR_VAR: "127.0.0.1:4999",
        "TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]},
                                 "task": {"type": "worker", "index": 1}},
                                separators=(",", ":")),
    }


def test_token_is_never_part_of_a_spec() -> None:
    for spec in build_process_list(_local(), OPTIONS, ps_ports=[1, 2]):
        assert env.TOKEN_VAR not in spec.env and env.PS_TOKEN_VAR not in spec.env
        assert not any("token" in a.lower() for a in spec.argv)


def test_spec_env_is_read_only() -> None:
    spec = build_process_list(_local(), OPTIONS)[0]
    with pytest.raises(TypeError):
        spec.env["X"] = "1"  # type: ignore[index]


def test_wrong_number_of_bound_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="Expected 2 PS ports"):
        build_process_list(_local(), OPTIONS, ps_ports=[1])


def test_local_ranks_count_per_host() -> None:
    cluster = parse_dist_config({"nodes": [{"host": "a", "workers": 2, "chief": True},
                                           {"host": "b", "workers": 1}]})
    specs = build_process_list(cluster, OPTIONS)
    assert [(s.env[env.RANK_VAR], s.env[env.LOCAL_RANK_VAR], s.env[env.LOCAL_SIZE_VAR])
            for s in specs] == [("0", "0", "2"), ("1", "1", "2"), ("2", "0", "1")]
    assert all(s.remote for s in specs)


def test_remote_ps_binds_its_host_on_the_configured_port_with_remote_python() -> None:
    cluster = parse_dist_config({"nodes": [{"host": "node1", "servers": 1, "workers": 1,
                                            "server_ports": [7000]}]})
    ps = build_process_list(cluster, OPTIONS)[0]
    assert ps.remote and ps.port_file is None
    assert ps.argv[:8] == ("python3", "-m", PS_MODULE, "--address", "node1", "--port", "7000",
                           "--shard-index")


TF_CONFIG = {"cluster": {"chief": ["chief-0:2222"], "worker": ["worker-0:2222"],
                         "ps": ["ps-0:2222", "ps-1:2222"]}}


def test_tf_config_ps_task_runs_one_local_ps_on_all_interfaces() -> None:
    cluster = parse_tf_config({**TF_CONFIG, "task": {"type": "ps", "index": 1}})
    (spec,) = build_process_list(cluster, OPTIONS)
    assert spec.role is Role.PS and spec.rank == 1 and not spec.remote
    assert spec.argv[3:13] == ("--address", "0.0.0.0", "--port", "2222", "--shard-index", "1",
                               "--num-shards", "2", "--num-workers", "2")


def test_tf_config_worker_task_runs_only_itself_with_the_pod_cluster() -> None:
    cluster = parse_tf_config({**TF_CONFIG, "task": {"type": "worker", "index": 0}})
    (spec,) = build_process_list(cluster, OPTIONS)
    assert spec.role is Role.WORKER and spec.rank == 1 and not spec.remote
    assert spec.env[env.PS_ADDRS_VAR] == "ps-0:2222,ps-1:2222"
    assert spec.env[env.COORDINATOR_VAR] == "chief-0:2223"
    assert json.loads(spec.env["TF_CONFIG"]) == {
        "cluster": {"chief": ["chief-0:2222"], "worker": ["worker-0:2222"]},
        "task": {"type": "worker", "index": 0}}


def test_horovod_mode_starts_workers_with_one_horovodrun() -> None:
    cluster = parse_dist_config({"nodes": [{"host": "node1", "servers": 1, "workers": 2,
                                            "chief": True},
                                           {"host": "node2", "servers": 1, "workers": 2}]})
    options = LaunchOptions(command=("python", "train.py"), horovod=True)
    specs = build_process_list(cluster, options)
    assert [s.name for s in specs] == ["ps 0", "ps 1", "horovodrun"]
    hvd = specs[2]
    assert not hvd.remote
    assert hvd.argv == ("horovodrun", "--gloo", "-np", "4", "-H", "node1:2,node2:2", "python",
                        "train.py")
    assert hvd.env[env.PS_ADDRS_VAR] == "node1:23400,node2:23400"
    assert env.RANK_VAR not in hvd.env


def test_options_validate() -> None:
    with pytest.raises(ValueError, match="worker command"):
        LaunchOptions(command=())
    with pytest.raises(ValueError, match="tuple of strings"):
        LaunchOptions(command=["python"])  # type: ignore[arg-type]


def test_horovod_with_a_tf_config_task_is_refused() -> None:
    cluster = parse_tf_config({**TF_CONFIG, "task": {"type": "worker", "index": 0}})
    options = LaunchOptions(command=("python", "train.py"), horovod=True)
    with pytest.raises(ClusterConfigError, match="expected no --horovod in TF_CONFIG task mode"):
        build_process_list(cluster, options)
