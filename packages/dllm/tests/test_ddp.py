"""dllm-finetune on 2 CPU processes (torchrun, gloo DDP): it used to crash at step 1 reading
``model.config`` through the DDP wrapper."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_dllm_finetune_two_processes(tmp_path):
    from leanlm.core.models import load_tokenizer
    from leanlm.core.testing.tiny_models import tiny_llama
    from leanlm.dllm import DLLM

    tiny = tmp_path / "tiny"
    tiny_llama(
        num_layers=3, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64
    ).save_pretrained(tiny)
    load_tokenizer("default").save_pretrained(tiny)
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env["OMP_NUM_THREADS"] = "1"
    script = Path(sys.executable).with_name("dllm-finetune")
    cmd = [
        str(script),
        "piqa",
        "--model",
        str(tiny),
        "--output",
        str(tmp_path / "run"),
        "--nproc",
        "2",
        "--limit",
        "16",
        "--test_size",
        "4",
        "--max_steps",
        "2",
        "--batch_size",
        "2",
        "--max_length",
        "48",
        "--start_layer",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index('{\n  "saved"') :])  # printed once, by rank 0
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert proc.stdout.count('"saved"') == 1
    loaded = DLLM.load(summary["saved"], str(tiny))
    assert loaded.num_layers == 3 and len(loaded.routers) == 2


def test_finetune_takes_the_shared_training_flags():
    from leanlm.core.training import missing_trainer_flags
    from leanlm.dllm import cli

    assert missing_trainer_flags(cli.finetune) == []
