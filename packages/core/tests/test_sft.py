import pytest
import torch

from leanlm.core.sft import IGNORE_INDEX, PaddingCollator, encode_prompt, tokenize_example
from leanlm.core.templates import format_prompt
from leanlm.core.testing.tiny_models import ARCH_STYLE, ARCHITECTURES, STYLES, tiny_tokenizer


def test_prompt_tokens_are_masked(tokenizer):
    ex = tokenize_example(tokenizer, "### Instruction:\nAdd.\n\n### Response:", " 5", max_length=64)
    n_prompt = len(tokenizer("### Instruction:\nAdd.\n\n### Response:")["input_ids"])
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tokenizer.eos_token_id


def test_long_prompt_leaves_room_for_response(tokenizer):
    prompt = "word " * 500
    ex = tokenize_example(tokenizer, prompt, "the answer", max_length=64)
    assert len(ex["input_ids"]) <= 64
    assert sum(label != IGNORE_INDEX for label in ex["labels"]) >= 3  # response survived


def test_collator_pads_right_and_left():
    feats = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    right = PaddingCollator(pad_token_id=0)(feats)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = PaddingCollator(pad_token_id=0, side="left", pad_to_multiple_of=4)(feats)
    assert left["input_ids"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert left["input_ids"].dtype == torch.long


def test_collator_stacks_scalar_fields():
    feats = [{"input_ids": [5, 6], "group_count": 2}, {"input_ids": [7], "group_count": 1}]
    batch = PaddingCollator(pad_token_id=0)(feats)
    assert batch["group_count"].tolist() == [2, 1]
    assert batch["input_ids"].tolist() == [[5, 6], [7, 0]]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("template", ["chat", "alpaca"])
def test_one_bos_per_architecture(arch, template):
    """Chat-rendered text already holds the BOS on BOS-adding tokenizers: no second one is added."""
    tok = tiny_tokenizer(arch)
    prompt = format_prompt(template, "Name a colour.", tokenizer=tok)
    ids = tokenize_example(tok, prompt, "Blue.")["input_ids"]
    if STYLES[ARCH_STYLE[arch]].bos is None:  # Qwen style: nothing is added to the text's own tokens
        assert encode_prompt(tok, prompt) == tok(prompt, add_special_tokens=False)["input_ids"]
        return
    bos = tok.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    body = prompt.removeprefix(tok.bos_token)
    assert encode_prompt(tok, prompt) == [bos, *tok(body, add_special_tokens=False)["input_ids"]]
    assert (template == "chat") == prompt.startswith(tok.bos_token)  # both paths were exercised
