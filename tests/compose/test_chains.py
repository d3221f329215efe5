"""The methods chain through folders core opens: Lion -> BitDistiller -> BiTA on a tiny model, as a recipe.

Runs with every package installed (the nox session ``compose``). Each hop is a console script in its
own process, as a user runs it; each assertion checks what the next hop consumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from leanlm.core.packed import is_packed_folder
from leanlm.core.recipe import run_recipe

STEPS = [
    {"name": "distill", "command": "lion-iterate", "model_flag": "student", "output_flag": "run_dir",
     "produces": "iter_1/student",
     "flags": {"train_pool": "instructions", "pool_limit": 4, "backend": "hf", "model": "{model}",
               "num_hard": 1, "num_easy": 1, "teacher_max_tokens": 8, "student_max_tokens": 8,
               "referee_max_tokens": 8, "generator_max_tokens": 8, "epochs": 1, "max_length": 64,
               "batch_size": 2, "grad_accum": 1}},
    {"name": "teacher-data", "command": "bitdistiller-generate", "output_flag": None, "produces": None,
     "flags": {"dataset": "alpaca", "max_sample": 4, "max_new_tokens": 8, "out": "{output}/teacher.jsonl"}},
    {"name": "qat", "command": "bitdistiller-train", "produces": "final",
     "flags": {"data": "{steps.teacher-data.output}/teacher.jsonl", "quant_type": "int", "w_bit": 4,
               "group_size": 32, "max_steps": 2, "max_length": 48, "batch_size": 2, "grad_accum": 1}},
    {"name": "export", "command": "bitdistiller-export", "output_flag": "out_dir", "flags": {"format": "packed"}},
    {"name": "bita-prompts", "command": "bita-gen-prompts", "output_flag": None, "produces": None,
     "flags": {"data": "instructions", "limit": 4, "output": "{output}/prompts.jsonl",
               "template": "alpaca"}},
    {"name": "bita-data", "command": "bita-gen-outputs", "output_flag": None, "produces": None,
     "flags": {"prompts": "{steps.bita-prompts.output}/prompts.jsonl", "output": "{output}/data.jsonl",
               "max_new_tokens": 16}},
    {"name": "bita", "command": "bita-train", "evaluate": False,
     "flags": {"data": "{steps.bita-data.output}/data.jsonl", "max_steps": 2, "cutoff": 64, "batch_size": 2,
               "grad_accum": 1, "num_prefix": 4}},
    {"name": "bita-eval", "command": "bita-eval", "model_flag": None, "produces": None,
     "flags": {"data": "instructions", "adapter": "{steps.bita.output}", "model": "{steps.export.model}",
               "limit": 2, "max_new_tokens": 12, "tree": "1", "template": "alpaca"}},
]  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("chain")
    start = root / "tiny"
    tiny_model.save_pretrained(start)
    tokenizer.save_pretrained(start)
    recipe = root / "chain.yaml"
    recipe.write_text(yaml.safe_dump({"name": "chain", "model": str(start), "steps": STEPS}))
    run_recipe(recipe, root / "run", evaluate=False)
    return root / "run"


def test_lion_student_is_a_model_folder_bitdistiller_takes(chain):
    from leanlm.core.models import load_model

    student = chain / "1-distill" / "iter_1" / "student"
    assert (student / "config.json").exists() and load_model(str(student), device="cpu") is not None
    argv = json.loads((chain / "3-qat" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(student)  # QAT started from the Lion student
    records = [
        json.loads(line) for line in (chain / "2-teacher-data" / "teacher.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4 and all(r["ok"] for r in records)


def test_export_is_a_packed_folder_load_model_opens(chain):
    from leanlm.core.models import load_model

    export = chain / "4-export"
    assert is_packed_folder(export)
    model = load_model(str(export), device="cpu")
    assert any(type(m).__name__ == "PackedLinear" for m in model.modules())


def test_bita_on_the_packed_base_is_lossless(chain):
    assert any((chain / "7-bita").iterdir())
    argv = json.loads((chain / "7-bita" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(
        chain / "4-export"
    )  # the adapter was trained on the packed base
    speed = json.loads((chain / "8-bita-eval" / "speed.json").read_text())
    bita = speed["methods"]["bita[1]"]["overall"]
    assert bita["n"] == 2 and bita["equal_outputs"] == 1.0  # token-identical to the packed model's own greedy
