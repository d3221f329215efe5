"""The tiny architecture zoo: each builds, round-trips through an HF folder, and frames text in its style."""

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.core.testing.tiny_models import (
    ARCH_STYLE,
    ARCHITECTURES,
    STYLES,
    tiny_model,
    tiny_model_dir,
    tiny_tokenizer,
)

QUIRKS = {  # a module each architecture's block must have (so the configs exercise what differs)
    "llama": "self_attn.q_proj",
    "llama3": "self_attn.q_proj",
    "qwen2": "self_attn.q_proj",
    "qwen3": "self_attn.q_norm",
    "mistral": "self_attn.q_proj",
    "gemma": "self_attn.q_proj",
    "gemma2": "pre_feedforward_layernorm",
    "phi3": "self_attn.qkv_proj",
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_round_trip_and_style(arch, tmp_path):
    from leanlm.core.models import load_model, load_tokenizer

    model = tiny_model(arch)
    assert model.config.model_type == ("llama" if arch == "llama3" else arch)
    model.model.layers[0].get_submodule(QUIRKS[arch])
    folder = tiny_model_dir(arch, tmp_path / arch)
    loaded, tok = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    ids = torch.tensor([tok("the quick brown fox").input_ids])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    style = STYLES[ARCH_STYLE[arch]]
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    if style.bos is None:
        assert tok.bos_token_id not in tok("hi").input_ids
    else:  # the tokenizer adds one BOS, and the rendered chat text already starts with it
        assert tok("hi").input_ids[0] == tok.bos_token_id == tok.convert_tokens_to_ids(style.bos)
        assert tok("hi").input_ids.count(tok.bos_token_id) == 1
        assert chat.startswith(style.bos)


def test_unknown_arch_is_a_user_error():
    with pytest.raises(UserError, match="llama3, qwen2"):
        tiny_model("falcon")
    with pytest.raises(UserError, match="unknown tiny architecture"):
        tiny_tokenizer("gpt2")


def test_tiny_arch_dir_fixture(tiny_arch_dir):
    from leanlm.core.models import load_tokenizer

    folder = tiny_arch_dir("gemma2")
    assert tiny_arch_dir("gemma2") == folder  # written once per session
    assert load_tokenizer(str(folder)).bos_token == "<bos>"
