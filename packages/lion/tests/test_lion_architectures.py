"""Lion's student path on every supported architecture (tiny random configs), through the console
scripts: lion-train lowers the student's loss on the teacher's answers and saves a loadable HF
folder, and lion-infer answers the pool with the trained student in process (hf backend)."""

from __future__ import annotations

import pytest
import torch

from leanlm.core.console import run_cli
from leanlm.core.models import load_model, load_tokenizer
from leanlm.core.records import read_jsonl, write_jsonl
from leanlm.core.testing.tiny_models import ARCHITECTURES
from leanlm.lion import cli
from leanlm.lion.train import build_examples

RECORDS = [
    {"id": str(i), "instruction": f"Say the word number {i}.", "input": "", "output": f"word {i} word {i}"}
    for i in range(6)
]


def _mean_loss(model, examples) -> float:
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss
            for e in examples
        ]
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_train_then_infer(arch, tiny_arch_dir, tmp_path):
    base_dir = tiny_arch_dir(arch)
    data, student = tmp_path / "teacher.jsonl", tmp_path / "student"
    write_jsonl(data, RECORDS)
    flags = [
        "--model",
        str(base_dir),
        "--max_length",
        "48",
        "--learning_rate",
        "3e-3",
        "--epochs",
        "4",
        "--batch_size",
        "3",
        "--grad_accum",
        "1",
        "--warmup_ratio",
        "0",
        "--logging_steps",
        "1",
    ]
    run_cli(cli.train, "lion-train", [str(data), str(student), *flags])
    tok = load_tokenizer(str(student))
    examples = build_examples(tok, RECORDS, max_length=48)
    assert all(e["input_ids"].count(tok.bos_token_id) <= 1 for e in examples)  # never a double BOS
    trained, base = load_model(str(student), device="cpu"), load_model(str(base_dir), device="cpu")
    assert type(trained) is type(base)
    assert _mean_loss(trained, examples) < _mean_loss(base, examples) - 0.5

    answers = tmp_path / "answers.jsonl"
    run_cli(
        cli.infer,
        "lion-infer",
        [
            str(data),
            str(answers),
            "--model",
            str(student),
            "--backend",
            "hf",
            "--max_new_tokens",
            "6",
            "--temperature",
            "0",
            "--limit",
            "2",
        ],
    )
    rows = read_jsonl(answers)
    assert [r["id"] for r in rows] == ["0", "1"] and all(isinstance(r["output"], str) for r in rows)
