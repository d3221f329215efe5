import os
import time

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.core.models import (
    ALIASES,
    load_model,
    load_tokenizer,
    pick_dtype,
    resolve_model,
)
from leanlm.core.testing.tiny_models import tiny_llama


def test_alias_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("llama2-7b-chat").kind == "missing"
    (tmp_path / "checkpoints" / "llama2-7b-chat").mkdir(parents=True)
    r = resolve_model("llama2-7b-chat")
    assert (r.kind, r.location) == ("checkpoint", os.path.join("checkpoints", "llama2-7b-chat"))
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model(str(local)).kind == "local"  # an existing path wins over everything
    monkeypatch.delenv("HF_HUB_OFFLINE")
    r = resolve_model("vicuna-7b")
    assert (r.kind, r.location) == ("hub", ALIASES["vicuna-7b"])


def test_embedded_alias_and_synonym(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert resolve_model("default").kind == "embedded"
    assert resolve_model("smollm2-135m").kind == "embedded"


def test_offline_not_found_says_where_to_put_weights(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_model("llama2-13b-chat")
    msg = str(e.value)
    assert "checkpoints/llama2-13b-chat" in msg and "\n" not in msg


def test_unknown_name_lists_aliases(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not a known alias"):
        load_model("no-such-model")


def test_pick_dtype():
    assert pick_dtype(None, "cpu") is torch.float32
    assert pick_dtype("bf16") is torch.bfloat16
    with pytest.raises(UserError):
        pick_dtype("int3")


def test_tiny_llama_forward(tokenizer):
    model = tiny_llama()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    ids = tokenizer(["hello there", "a b c d"], return_tensors="pt", padding=True)
    out = model(**ids)
    assert out.logits.shape == (2, ids["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.logits).all()
    again = tiny_llama()(**ids).logits
    torch.testing.assert_close(out.logits, again)  # deterministic for a seed


@pytest.mark.slow
def test_embedded_model_answers_paris(embedded_model, tokenizer):
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = embedded_model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.slow
def test_embedded_model_cached_load_is_fast(embedded_model):
    t0 = time.time()
    model = load_model("default", device="cpu")
    assert time.time() - t0 < 15
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert load_tokenizer("smollm2-135m").eos_token == "<|im_end|>"
