"""bita-eval's prompts, rendered with a BOS-adding chat template, are encoded with exactly one BOS."""

from __future__ import annotations

import pytest

from leanlm.bita.evaluate import load_eval_prompts
from leanlm.core.sft import encode_prompt
from leanlm.core.testing.tiny_models import tiny_tokenizer


@pytest.mark.parametrize("arch", ["llama3", "gemma", "mistral", "phi3"])
def test_one_bos(arch):
    tok = tiny_tokenizer(arch)
    prompt = load_eval_prompts("instructions", tok, "chat", limit=1)[0]["prompt"]
    assert prompt.startswith(tok.bos_token)  # the chat template writes the BOS itself
    ids = encode_prompt(tok, prompt)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert (
        tok(prompt, add_special_tokens=True)["input_ids"].count(tok.bos_token_id) == 2
    )  # what it did before
