"""lion-train (prompt masking, loss goes down, saved model loads) and lion-weight-diff round trips."""

from __future__ import annotations

import copy

import pytest
import torch

from leanlm.core.sft import IGNORE_INDEX
from leanlm.lion.prompts import student_prompt
from leanlm.lion.train import build_examples, train_student
from leanlm.lion.weight_diff import make_diff, recover

RECORDS = [
    {
        "id": str(i),
        "instruction": f"Say the word number {i}.",
        "input": "twice" if i % 2 else "",
        "output": f"word {i} word {i}",
    }
    for i in range(8)
]


def test_examples_mask_the_prompt(tokenizer):
    ex = build_examples(tokenizer, RECORDS[:2], max_length=64)
    for rec, e in zip(RECORDS, ex):
        prompt = student_prompt(rec["instruction"], rec["input"])
        assert prompt.startswith("### Instruction:\n") and prompt.endswith("\n\n### Response:\n")
        n_prompt = len(tokenizer(prompt)["input_ids"])
        assert e["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        answer = e["labels"][n_prompt:]
        assert answer[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(answer[:-1]) == rec["output"]
    assert "twice" in tokenizer.decode(ex[1]["input_ids"])  # the input is part of the prompt


def test_train_student_lowers_loss_and_saves(tmp_path, tiny_dir, tokenizer):
    from leanlm.core.models import load_model

    out = tmp_path / "student"
    metrics = train_student(
        str(tiny_dir),
        RECORDS,
        out,
        max_length=48,
        num_train_epochs=3,
        learning_rate=3e-3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        warmup_ratio=0.0,
        logging_steps=1,
    )
    assert metrics["train_loss"] > 0
    trained = load_model(str(out), device="cpu")
    base = load_model(str(tiny_dir), device="cpu")
    batch = build_examples(tokenizer, RECORDS, max_length=48)

    def loss(model):
        total = 0.0
        for e in batch:
            ids = torch.tensor([e["input_ids"]])
            total += model(input_ids=ids, labels=torch.tensor([e["labels"]])).loss.item()
        return total / len(batch)

    assert loss(trained) < loss(base) - 0.5
    assert (out / "tokenizer.json").exists() and (out / "leanlm_run.json").exists()


def _raw_and_tuned(tmp_path, tiny_model, tokenizer):
    """A base without a pad token, and a tuned copy that gained [PAD] (one more embedding row)."""
    raw_dir, tuned_dir = tmp_path / "raw", tmp_path / "tuned"
    raw_tok = copy.deepcopy(tokenizer)
    raw_tok.pad_token = None
    tiny_model.save_pretrained(raw_dir)
    raw_tok.save_pretrained(raw_dir)
    tuned = copy.deepcopy(tiny_model)
    tuned_tok = copy.deepcopy(raw_tok)
    tuned_tok.add_special_tokens({"pad_token": "[PAD]"})
    tuned.resize_token_embeddings(len(tuned_tok), mean_resizing=False)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    tuned.save_pretrained(tuned_dir)
    tuned_tok.save_pretrained(tuned_dir)
    return raw_dir, tuned_dir, tuned


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_weight_diff_round_trip(tmp_path, tiny_model, tokenizer, dtype):
    from transformers import AutoTokenizer

    from leanlm.core.models import load_model

    raw_dir, tuned_dir, tuned = _raw_and_tuned(tmp_path, tiny_model, tokenizer)
    assert AutoTokenizer.from_pretrained(raw_dir).pad_token is None
    make_diff(str(raw_dir), str(tuned_dir), str(tmp_path / "diff"), dtype=dtype)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "diff" / "model.safetensors"), "pt") as f:  # stored as asked (fp16 default)
        stored = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert stored == {"F32" if dtype == "float32" else "F16"}
    diff = load_model(str(tmp_path / "diff"), device="cpu")
    out = recover(str(raw_dir), str(tmp_path / "diff"), str(tmp_path / "recovered"), dtype="float32")
    want = tuned.state_dict()
    for name, value in out.state_dict().items():
        if dtype == "float32":
            torch.testing.assert_close(value, want[name], rtol=0, atol=1e-6)
        else:  # one fp16 rounding of the (small) difference
            torch.testing.assert_close(value, want[name], rtol=0, atol=2e-4)
    assert AutoTokenizer.from_pretrained(tmp_path / "recovered").pad_token == "[PAD]"
    # the diff alone is far from the tuned weights: the round trip is doing the work
    assert not torch.allclose(
        diff.model.embed_tokens.weight.float(), want["model.embed_tokens.weight"], atol=1e-2
    )
