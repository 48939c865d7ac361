"""The tf.distribute custom-training-loop example runs briefly and reports finite metrics."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
SCRIPT = os.path.join(ROOT, "examples", "ctr", "ctl_herald.py")
EPOCH = re.compile(r"^epoch (\d+): loss (\S+) auc (\S+) \| val logloss (\S+) val auc (\S+)",
                   re.MULTILINE)


def test_ctl_example_trains_a_few_steps_and_prints_finite_loss_and_auc() -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--steps", "8", "--epochs", "2", "--batch-size", "128",
         "--num-samples", "3000"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, start_new_session=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    epochs = EPOCH.findall(proc.stdout)
    assert [int(e[0]) for e in epochs] == [1, 2], proc.stdout
    for _, loss, auc, val_loss, val_auc in epochs:
        assert math.isfinite(float(loss)) and 0 < float(loss) < 5
        assert math.isfinite(float(val_loss))
        assert 0 <= float(auc) <= 1 and 0 <= float(val_auc) <= 1
    assert "8 steps/epoch of 128" in proc.stdout
