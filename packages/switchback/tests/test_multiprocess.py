"""switchback-finetune on 2 CPU processes (--nproc 2: torchrun, gloo DDP) with SwitchBack int8 layers:
the data is split between the ranks (half the steps), and rank 0 alone writes the run log."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_switchback_finetune_two_processes(tmp_path, tiny_model, tokenizer):
    tiny = tmp_path / "tiny"
    tiny_model.save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    cmd = [
        str(Path(sys.executable).with_name("switchback-finetune")),
        "--model",
        str(tiny),
        "--limit",
        "8",
        "--batch_size",
        "2",
        "--epochs",
        "1",
        "--num_runs",
        "1",
        "--target_max_len",
        "24",
        "--nproc",
        "2",
        "--switchback",
        "true",
        "--save_model",
        "false",
        "--output_dir",
        str(out),
    ]
    proc = subprocess.run(
        cmd, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (out / "finetune_log.jsonl").read_text().splitlines()
    assert len(lines) == 1  # written once, by rank 0
    run = json.loads(lines[0])
    assert run["world_size"] == 2 and run["examples"] == 8 and run["swapped_layers"] > 0
    assert run["steps"] == 2  # 8 examples, batch 2 per rank on 2 ranks (one process: 4 steps)


def test_trainer_takes_the_shared_training_flags():
    from leanlm.core.training import missing_trainer_flags
    from leanlm.switchback import cli

    assert missing_trainer_flags(cli.finetune_command) == []
