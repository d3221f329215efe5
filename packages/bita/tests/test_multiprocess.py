"""bita-train on 2 CPU processes (--nproc 2: torchrun, gloo DDP): the data is split between the ranks
(half the steps of one process), rank 0 alone writes the adapter, and it loads."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bita_train_two_processes(tmp_path, tiny_model_dir):
    from leanlm.bita.model import load_bita
    from leanlm.core.models import load_model

    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"Count from {i}:", "output": f" {i} {i + 1} {i + 2} {i + 3} {i + 4}"})
            + "\n"
            for i in range(8)
        )
    )
    out = tmp_path / "adapter"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [
        str(Path(sys.executable).with_name("bita-train")),
        "--data",
        str(data),
        "--model",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--nproc",
        "2",
        "--epochs",
        "1",
        "--max_steps",
        "-1",
        "--batch_size",
        "2",
        "--grad_accum",
        "1",
        "--num_prefix",
        "4",
        "--cutoff",
        "64",
        "--max_groups",
        "4",
        "--resample",
        "1",
    ]
    proc = subprocess.run(
        cmd, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "leanlm_run.json").read_text())["data"]
    assert summary["world_size"] == 2
    # DistributedSampler: each rank gets ceil(n / 2) examples, so one epoch is half the steps of one process
    assert (
        summary["steps"]
        == math.ceil(math.ceil(summary["examples"] / 2) / 2)
        < math.ceil(summary["examples"] / 2)
    )
    adapter = load_bita(out, base=load_model(str(tiny_model_dir)))
    assert adapter.num_masks == 3 and adapter.num_prefix == 4


def test_trainer_takes_the_shared_training_flags():
    from leanlm.bita import cli
    from leanlm.core.training import missing_trainer_flags

    assert missing_trainer_flags(cli.train) == []
