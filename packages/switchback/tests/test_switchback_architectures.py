"""switchback-finetune end to end on every supported architecture (tiny random configs, saved as folders):
the int8 run starts from the same loss as the float run, both lower it, and the saved model is the
architecture's own plain HF class that loads back in transformers with the trained weights."""

from __future__ import annotations

import json

import pytest
import torch

from leanlm.core.console import run_cli
from leanlm.core.records import read_jsonl
from leanlm.core.testing.tiny_models import ARCHITECTURES
from leanlm.switchback.cli import finetune_command


def _finetune(base_dir, out, switchback: bool) -> dict:
    flags = {
        "--model": base_dir,
        "--dataset": "instructions",
        "--limit": 8,
        "--batch-size": 4,
        "--max-steps": 4,
        "--learning-rate": 3e-3,
        "--target-max-len": 24,
        "--num-runs": 1,
        "--logging-steps": 1,
        "--switchback": str(switchback).lower(),
        "--output-dir": out,
    }
    run_cli(finetune_command, "switchback-finetune", [str(x) for kv in flags.items() for x in kv])
    (record,) = read_jsonl(out / "finetune_log.jsonl")
    return record


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_finetune_int8_tracks_float(arch, tiny_arch_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir = tiny_arch_dir(arch)
    linear = _finetune(base_dir, tmp_path / "linear", switchback=False)
    int8 = _finetune(base_dir, tmp_path / "int8", switchback=True)
    assert linear["swapped_layers"] == 0 and int8["swapped_layers"] > 0
    float_losses, int8_losses = [loss for _, loss in linear["losses"]], [loss for _, loss in int8["losses"]]
    assert len(int8_losses) == 4 and all(map(torch.isfinite, torch.tensor(int8_losses)))
    assert abs(int8_losses[0] - float_losses[0]) < 0.05  # same start: int8 forward ~ float forward
    assert int8_losses[-1] < int8_losses[0] and float_losses[-1] < float_losses[0]

    saved = tmp_path / "int8" / "model"
    base_config = json.loads((base_dir / "config.json").read_text())
    assert json.loads((saved / "config.json").read_text())["architectures"] == base_config["architectures"]
    trained, info = AutoModelForCausalLM.from_pretrained(saved, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # plain weights, no int8 leftovers
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    ids = torch.arange(5, 17).unsqueeze(0)
    with torch.no_grad():
        assert not torch.allclose(trained(ids).logits, base(ids).logits)  # the trained weights were saved
