"""The methods chain through folders core opens: Lion -> BitDistiller -> BiTA on a tiny model, as a recipe.

BitDistiller's teacher data mixes the Lion teacher's answers (``iter_1/teacher_data.jsonl``, Alpaca
records) with answers the Lion student generates itself (``bitdistiller-generate``).

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


def bita_steps(data: str, tree: str) -> list[dict]:
    """BiTA on the chain's packed export: train an adapter on ``data``, then evaluate ``tree`` against greedy."""
    return [
        {
            "name": "bita",
            "command": "bita-train",
            "evaluate": False,
            "flags": {
                "data": data,
                "max_steps": 2,
                "cutoff": 64,
                "batch_size": 2,
                "grad_accum": 1,
                "num_prefix": 4,
            },
        },
        {
            "name": "bita-eval",
            "command": "bita-eval",
            "model_flag": None,
            "produces": None,
            "flags": {
                "data": "instructions",
                "adapter": "{steps.bita.output}",
                "model": "{steps.export.model}",
                "limit": 2,
                "max_new_tokens": 12,
                "tree": tree,
                "template": "alpaca",
            },
        },
    ]


STEPS = [
    {
        "name": "distill",
        "command": "lion-iterate",
        "model_flag": "student",
        "output_flag": "run_dir",
        "produces": "iter_1/student",
        "flags": {
            "train_pool": "instructions",
            "pool_limit": 4,
            "backend": "hf",
            "model": "{model}",
            "num_hard": 1,
            "num_easy": 1,
            "teacher_max_tokens": 8,
            "student_max_tokens": 8,
            "referee_max_tokens": 8,
            "generator_max_tokens": 8,
            "epochs": 1,
            "max_length": 64,
            "batch_size": 2,
            "grad_accum": 1,
        },
    },
    {
        "name": "teacher-data",
        "command": "bitdistiller-generate",
        "output_flag": None,
        "produces": None,
        "flags": {
            "dataset": "alpaca",
            "max_sample": 4,
            "max_new_tokens": 8,
            "output": "{output}/teacher.jsonl",
        },
    },
    {
        "name": "mix",
        "command": "bitdistiller-mix",
        "output_flag": None,
        "model_flag": None,
        "produces": None,
        "args": [
            "{steps.distill.output}/iter_1/teacher_data.jsonl",
            "{steps.teacher-data.output}/teacher.jsonl",
        ],
        "flags": {"output": "{output}/mix.jsonl"},
    },
    {
        "name": "qat",
        "command": "bitdistiller-train",
        "produces": "final",
        "flags": {
            "data": "{steps.mix.output}/mix.jsonl",
            "quant_type": "int",
            "w_bit": 4,
            "group_size": 32,
            "max_steps": 2,
            "max_length": 48,
            "batch_size": 2,
            "grad_accum": 1,
        },
    },
    {
        "name": "export",
        "command": "bitdistiller-export",
        "output_flag": "output_dir",
        "flags": {"format": "packed"},
    },
    {
        "name": "bita-prompts",
        "command": "bita-gen-prompts",
        "output_flag": None,
        "produces": None,
        "flags": {
            "data": "instructions",
            "limit": 4,
            "output": "{output}/prompts.jsonl",
            "template": "alpaca",
        },
    },
    {
        "name": "bita-data",
        "command": "bita-gen-outputs",
        "output_flag": None,
        "produces": None,
        "flags": {
            "prompts": "{steps.bita-prompts.output}/prompts.jsonl",
            "output": "{output}/data.jsonl",
            "max_new_tokens": 16,
        },
    },
    *bita_steps("{steps.bita-data.output}/data.jsonl", tree="1"),
]


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
    argv = json.loads((chain / "4-qat" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(student)  # QAT started from the Lion student
    records = [
        json.loads(line) for line in (chain / "2-teacher-data" / "teacher.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4 and all(r["ok"] for r in records)


def test_qat_data_holds_the_lion_teachers_answers(chain):
    from leanlm.bitdistiller.data import alpaca_prompt, read_teacher_file

    lion = [
        json.loads(x)
        for x in (chain / "1-distill" / "iter_1" / "teacher_data.jsonl").read_text().splitlines()
    ]
    assert lion and all(r["output"] for r in lion)
    mixed = read_teacher_file(chain / "3-mix" / "mix.jsonl")  # what bitdistiller-train read
    pairs = {(r["prompt"], r["response"]) for r in mixed}
    assert len(mixed) == len(lion) + 4
    assert all((alpaca_prompt(r["instruction"], r.get("input", "")), r["output"]) in pairs for r in lion)
    argv = json.loads((chain / "4-qat" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--data") + 1] == str(chain / "3-mix" / "mix.jsonl")


def test_export_is_a_packed_folder_load_model_opens(chain):
    from leanlm.core.models import load_model

    export = chain / "5-export"
    assert is_packed_folder(export)
    model = load_model(str(export), device="cpu")
    assert any(type(m).__name__ == "PackedLinear" for m in model.modules())


def test_bita_on_the_packed_base_is_lossless(chain):
    assert any((chain / "8-bita").iterdir())
    argv = json.loads((chain / "8-bita" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(
        chain / "5-export"
    )  # the adapter was trained on the packed base
    speed = json.loads((chain / "9-bita-eval" / "speed.json").read_text())
    bita = speed["methods"]["bita[1]"]["overall"]
    assert bita["n"] == 2 and bita["equal_outputs"] == 1.0  # token-identical to the packed model's own greedy


SWITCHBACK_STEPS = [
    {
        "name": "finetune",
        "command": "switchback-finetune",
        "produces": "model",
        "flags": {
            "dataset": "instructions",
            "limit": 8,
            "max_steps": 2,
            "batch_size": 2,
            "source_max_len": 16,
            "target_max_len": 32,
        },
    },
    {
        "name": "qat",
        "command": "bitdistiller-train",
        "produces": "final",
        "flags": {
            "data": "{first}/3-mix/mix.jsonl",
            "quant_type": "int",
            "w_bit": 2,
            "group_size": 32,
            "max_steps": 2,
            "max_length": 48,
            "batch_size": 2,
            "grad_accum": 1,
        },
    },
    {
        "name": "export",
        "command": "bitdistiller-export",
        "output_flag": "output_dir",
        "flags": {"format": "packed"},
    },
    *bita_steps("{first}/7-bita-data/data.jsonl", tree="1-1"),
]


@pytest.fixture(scope="module")
def switchback_chain(chain, tmp_path_factory) -> Path:
    """SwitchBack fine-tune -> BitDistiller int2 -> BiTA, reusing the first chain's data files."""
    root = tmp_path_factory.mktemp("switchback_chain")
    steps = json.loads(json.dumps(SWITCHBACK_STEPS).replace("{first}", str(chain)))
    recipe = root / "chain.yaml"
    start = chain.parent / "tiny"
    recipe.write_text(yaml.safe_dump({"name": "switchback-chain", "model": str(start), "steps": steps}))
    run_recipe(recipe, root / "run", evaluate=False)
    return root / "run"


def test_switchback_finetune_feeds_bitdistiller_then_bita(switchback_chain):
    from leanlm.core.models import load_model

    tuned = switchback_chain / "1-finetune" / "model"
    model = load_model(str(tuned), device="cpu")  # a plain HF folder: SwitchBack layers were swapped back
    assert not any("SwitchBack" in type(m).__name__ for m in model.modules())
    argv = json.loads((switchback_chain / "2-qat" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(tuned)
    export = switchback_chain / "3-export"
    assert is_packed_folder(export) and json.loads((export / "quantize_config.json").read_text())["bits"] == 2
    argv = json.loads((switchback_chain / "4-bita" / ".leanlm-step.json").read_text())["argv"]
    assert argv[argv.index("--model") + 1] == str(export)  # the adapter was trained on the 2-bit base
    speed = json.loads((switchback_chain / "5-bita-eval" / "speed.json").read_text())
    bita = speed["methods"]["bita[1-1]"]["overall"]
    assert bita["n"] == 2 and bita["equal_outputs"] == 1.0  # identical to the 2-bit model's own greedy
