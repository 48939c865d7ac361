"""The main job end to end: herald-run starts 2 PS and 2 workers running examples/ctr/run_herald.py
with the seed's flags, and every process ends cleanly with the metrics printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("model,flags", [
    ("wdl_criteo", ["--comm", "Hybrid", "--cache", "lru", "--bound", "0", "--mode", "herald"]),
    ("dlrm_avazu", ["--comm", "PS"]),
])
def test_seed_command_line_trains_through_the_launcher(tmp_path, model: str,
                                                       flags: list[str]) -> None:
    metrics = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "herald_tf.launch", "-c",
               os.path.join(ROOT, "examples", "config", "dist.yml"), "--",
               sys.executable, os.path.join(ROOT, "examples", "ctr", "run_herald.py"),
               "--model", model, *flags, "--bsp", "0", "--nepoch", "1", "--batch-size", "64",
               "--embedding-size", "8", "--cache-limit-ratio", "0.1", "--num-samples", "6000",
               "--metrics-json", str(metrics)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path), env=env,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "epoch 1: loss" in out.stdout and "held-out: logloss" in out.stdout
    result = json.loads(metrics.read_text())
    assert 0.0 < result["held_out_logloss"] < 5.0 and 0.0 <= result["held_out_auc"] <= 1.0
    assert result["bytes"]["pushed_gradients"] > 0 or result["mode"] == "herald"
