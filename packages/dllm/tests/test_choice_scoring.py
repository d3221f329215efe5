"""The two choice formats: data construction and lm-eval-style log-likelihood scoring."""

import copy

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.dllm import DLLM, DLLMConfig
from leanlm.dllm.data import Example, load_examples
from leanlm.dllm.evaluate import choice_accuracy


def test_text_format_examples():
    text = load_examples("piqa", "test", test_size=40, choice_format="text")
    number = load_examples("piqa", "test", test_size=40)
    assert len(text) == len(number) == 40
    for t, n in zip(text, number):
        assert t.choices and len(t.choices) == 2 and t.response == t.choices[t.label] and t.label == n.label
        assert t.prompt.startswith("Goal: ") and t.prompt.endswith("\nSolution:")
        assert all(c.startswith(" ") and c.strip() in n.prompt for c in t.choices)  # the same options
        assert n.choices is None and n.response == str(n.label + 1)
    boolq = load_examples("boolq", "train", limit=2, test_size=50, choice_format="text")
    assert boolq[0].prompt.endswith("\nAnswer:") and boolq[0].num_choices == 2
    with pytest.raises(UserError, match="choice_format must be one of number, text"):
        load_examples("piqa", "test", choice_format="letters")


def _hf_option_logprobs(model, tokenizer, e: Example) -> list[tuple[float, int]]:
    """Direct reference: one unpadded HF forward per option, summed log-probs of the option tokens."""
    prompt = tokenizer(e.prompt)["input_ids"]
    out = []
    for c in e.choices:
        option = tokenizer(c, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + option])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        picked = logp[len(prompt) - 1 :].gather(1, ids[0, len(prompt) :, None])
        out.append((float(picked.sum()), len(option)))
    return out


def test_loglik_scoring_matches_a_direct_reference(untied_base, tokenizer):
    """All blocks executing: scores, accuracies and NLL equal per-option HF forwards (padding included)."""
    examples = [
        Example("Goal: open a jar\nSolution:", " twist the lid", 2, 0, (" twist the lid", " eat the lid")),
        Example("Question: is the sky green?\nAnswer:", " no", 2, 1, (" yes indeed, always", " no")),
        Example("Goal: boil water\nSolution:", " use a pot", 3, 2, (" use a sieve", " a", " use a pot")),
    ]
    dense = DLLM(copy.deepcopy(untied_base), DLLMConfig(dynamic=False, lora_rank=0)).double().eval()
    # 7 sequences: batches cut mid-example
    got = choice_accuracy(dense, tokenizer, examples, batch_size=4, per_example=True)
    correct = correct_norm = 0
    nll = 0.0
    per_nll = []
    for i, e in enumerate(examples):
        ref = _hf_option_logprobs(untied_base, tokenizer, e)
        sums = [s for s, _ in ref]
        per_char = [s / len(c) for s, c in zip(sums, e.choices)]
        correct += sums.index(max(sums)) == e.label
        correct_norm += per_char.index(max(per_char)) == e.label
        per_nll.append(-ref[e.label][0] / ref[e.label][1])
        nll += per_nll[-1]
        assert got["per_example"]["correct"][i] == int(sums.index(max(sums)) == e.label)
        assert got["per_example"]["correct_norm"][i] == int(per_char.index(max(per_char)) == e.label)
    assert got["per_example"]["nll"] == pytest.approx(per_nll, rel=1e-6)
    assert "per_example" not in choice_accuracy(dense, tokenizer, examples, batch_size=4)
    assert got["examples"] == 3
    assert got["accuracy"] == pytest.approx(correct / 3) and got["accuracy_norm"] == pytest.approx(
        correct_norm / 3
    )
    assert got["answer_nll"] == pytest.approx(nll / 3, rel=1e-6)  # log-softmax runs in fp32
    assert got["exec_ratio"] == 1.0


def test_loglik_scoring_sees_routing(routed, tokenizer):
    """With ~half the blocks skipped, the scores change and the compute ratios fall below 1."""
    examples = load_examples("piqa", "test", test_size=40, choice_format="text")[:4]
    routed_result = choice_accuracy(routed, tokenizer, examples)
    dense = copy.deepcopy(routed)
    with torch.no_grad():
        for r in dense.routers.values():  # logits (skip, execute) = (0, 10) for every token
            r.up.weight.zero_()
            r.up.bias.copy_(torch.tensor([0.0, 10.0]))
    forced = choice_accuracy(dense, tokenizer, examples)
    assert routed_result["exec_ratio"] < 0.9 and forced["exec_ratio"] == 1.0
    assert routed_result["answer_nll"] != pytest.approx(forced["answer_nll"])


def test_mixed_formats_are_rejected(tiny_model, tokenizer):
    examples = [Example("p", "1", 2, 0), Example("p", " a", 2, 0, (" a", " b"))]
    net = DLLM(copy.deepcopy(tiny_model), DLLMConfig(dynamic=False, lora_rank=0))
    with pytest.raises(UserError, match="mixed choice formats"):
        choice_accuracy(net, tokenizer, examples)


def test_number_format_per_example_matches_the_next_token(untied_base, tokenizer):
    """Number format: per-example correctness and NLL of the option number after each prompt."""
    examples = [Example("Pick one: 1 or 2?", "1", 2, 0), Example("Which of 1, 2, 3 is it?", "3", 3, 2)]
    dense = DLLM(copy.deepcopy(untied_base), DLLMConfig(dynamic=False, lora_rank=0)).double().eval()
    got = choice_accuracy(dense, tokenizer, examples, per_example=True)
    digits = [tokenizer(str(i), add_special_tokens=False)["input_ids"][0] for i in (1, 2, 3)]
    for i, e in enumerate(examples):
        with torch.no_grad():
            logits = untied_base(torch.tensor([tokenizer(e.prompt)["input_ids"]])).logits[0, -1]
        logp = torch.log_softmax(logits.float(), -1)
        assert got["per_example"]["correct"][i] == int(int(logp[digits[: e.num_choices]].argmax()) == e.label)
        assert got["per_example"]["nll"][i] == pytest.approx(-float(logp[digits[e.label]]), rel=1e-5)
    assert "correct_norm" not in got["per_example"]
    assert got["accuracy"] == sum(got["per_example"]["correct"]) / 2


def test_routed_ratio_leaves_out_the_reserved_tokens(routed, tokenizer):
    """Routers that always skip: past the 2 reserved tokens only layer 0 (below start_layer 1) runs."""
    skip_all = copy.deepcopy(routed)
    with torch.no_grad():
        for r in skip_all.routers.values():
            r.up.weight.zero_()
            r.up.bias.copy_(torch.tensor([10.0, 0.0]))
    examples = load_examples("piqa", "test", test_size=40, choice_format="text")[:3]
    got = choice_accuracy(skip_all, tokenizer, examples)
    assert got["exec_ratio_routed"] == pytest.approx(1 / 4)
    lengths = [
        len(tokenizer(e.prompt)["input_ids"] + tokenizer(c, add_special_tokens=False)["input_ids"])
        for e in examples
        for c in e.choices
    ]
    expected = sum((2 + (n - 2) / 4) / n for n in lengths) / len(lengths)
    assert got["exec_ratio"] == pytest.approx(expected)
