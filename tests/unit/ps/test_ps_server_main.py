"""The herald-ps CLI: flags, token sources, refusals, and no TensorFlow in the PS process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from herald_tf import env
from herald_tf.ps import server_main


def test_parser_accepts_the_documented_flags() -> None:
    args = server_main.build_parser().parse_args(
        ["--port", "0", "--token", "t", "--checkpoint-dir", "/tmp/c", "--shard-index", "1",
         "--num-shards", "2", "--num-workers", "3", "--restore", "latest"])
    assert (args.port, args.checkpoint_dir, args.shard_index, args.num_shards) == \
        (0, "/tmp/c", 1, 2)
    assert args.address == "127.0.0.1"


def test_missing_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(env.PS_TOKEN_VAR, raising=False)
    with pytest.raises(SystemExit, match="token"):
        server_main.main(["--port", "0"])


def test_tls_needs_both_files() -> None:
    with pytest.raises(SystemExit, match="tls"):
        server_main.main(["--token", "t", "--tls-cert", "c.pem"])


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.PS_TOKEN_VAR, "from-env")
    args = server_main.build_parser().parse_args([])
    assert server_main._token(args) == "from-env"


def test_ps_process_imports_no_tensorflow() -> None:
    code = ("import sys, herald_tf.ps.server_main, herald_tf.ps.checkpoint, "
            "herald_tf.transport.grpc_server, herald_tf.transport.grpc_client; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
