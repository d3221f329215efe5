"""bitdistiller-train (KD-QAT, CAKLD with its teacher) on 2 CPU processes (--nproc 2: torchrun, gloo
DDP): the data is split between the ranks, rank 0 writes the final folder, and it loads quantized."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bitdistiller_train_two_processes(tmp_path, tiny_dir, teacher_file):
    from leanlm.bitdistiller.checkpoint import describe, load_model_for_eval

    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [
        str(Path(sys.executable).with_name("bitdistiller-train")),
        str(teacher_file),
        str(out),
        "--model",
        str(tiny_dir),
        "--nproc",
        "2",
        "--w_bit",
        "2",
        "--group_size",
        "32",
        "--max_samples",
        "8",
        "--epochs",
        "1",
        "--batch_size",
        "2",
        "--grad_accum",
        "1",
        "--max_length",
        "48",
        "--gamma_batches",
        "1",
        "--save_steps",
        "100",
    ]
    proc = subprocess.run(
        cmd, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == math.ceil(math.ceil(8 / 2) / 2) == 2  # one process: 4 steps
    model, _, spec = load_model_for_eval(summary["final"], device="cpu")
    assert spec is not None and spec.bits == 2 and describe(model) == spec.name


def test_trainer_takes_the_shared_training_flags():
    from leanlm.bitdistiller import cli
    from leanlm.core.training import missing_trainer_flags

    assert missing_trainer_flags(cli.train) == []
