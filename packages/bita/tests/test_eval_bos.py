"""bita-eval's prompts, rendered with the tokenizer's chat template, are encoded as the template wrote
them: nothing added, so exactly one BOS on tokenizers that add a BOS to plain text (Llama-3, Gemma,
Mistral, Phi-3), where encoding the rendered text with special tokens used to double it."""

from __future__ import annotations

import pytest

from leanlm.bita.evaluate import load_eval_prompts
from leanlm.core.sft import encode_prompt
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_tokenizer


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_bos(arch):
    tok = tiny_tokenizer(arch)
    prompt = load_eval_prompts("instructions", tok, "chat", limit=1)[0]["prompt"]
    ids = encode_prompt(tok, prompt)
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]  # the template's tokens, nothing more
    adds_bos = tok.bos_token_id is not None and tok("x")["input_ids"][0] == tok.bos_token_id
    if adds_bos:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert tok(prompt, add_special_tokens=True)["input_ids"].count(tok.bos_token_id) == 2  # the old way
