"""bf16 reporting: first divergence from greedy, and whether it was a tie within the dtype's rounding."""

import copy

import pytest
import torch

from leanlm.bita.decoding import greedy_reference
from leanlm.bita.evaluate import divergence_report, first_divergence, rounding_step


def test_rounding_step():
    assert rounding_step(3.0, torch.bfloat16) == 2.0**-6  # 3 = 1.5 * 2^1, 7 fraction bits
    assert rounding_step(-0.7, torch.bfloat16) == 2.0**-8
    assert rounding_step(1.0, torch.float32) == 2.0**-23
    assert rounding_step(0.0, torch.bfloat16) == 0.0
    # the step really is the spacing: x + step is the next bf16 number, x + step/4 rounds back to x
    x = torch.tensor(3.0, dtype=torch.bfloat16)
    assert float(x + torch.tensor(2.0**-6, dtype=torch.bfloat16)) > 3.0
    assert float((torch.tensor(3.0) + 2.0**-8).to(torch.bfloat16)) == 3.0


@pytest.fixture(scope="module")
def tied_pair(tokenizer):
    """A model whose LM head has two identical rows g < b: their logits tie exactly everywhere."""
    from leanlm.core.testing.tiny_models import tiny_llama

    base = tiny_llama(tie_word_embeddings=False, seed=1)
    ids = tokenizer("The cat sat on the mat and", add_special_tokens=True)["input_ids"]
    ref = greedy_reference(base, ids, 8)
    g = ref[3]
    b = g + 1 + (7 if g + 8 < base.config.vocab_size else -g - 2)
    b = max(b, g + 1)
    with torch.no_grad():
        base.get_output_embeddings().weight[b] = base.get_output_embeddings().weight[g]
    return base, ids, g, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_constructed_tie_is_reported_as_a_tie(tied_pair, dtype):
    base, ids, g, b = tied_pair
    model = copy.deepcopy(base).to(dtype)
    ref = greedy_reference(model, ids, 8)
    i = ref.index(g)  # argmax takes the first of the tied pair, g
    tied = ref[:i] + [b] + ref[i + 1 :]
    d = first_divergence(model, ids, ref, tied, pad=0)
    assert d["position"] == i and d["gap"] == 0.0 and d["tie"] and d["rerun_matches"]
    assert d["rounding_step"] == rounding_step(d["greedy_logit"], dtype)
    # a token far below greedy's is a real divergence, not a tie
    with torch.no_grad():
        logits = model(torch.tensor([ids + ref[:i]])).logits[0, -1].float()
    low = int(logits.argmin())
    d2 = first_divergence(model, ids, ref, ref[:i] + [low], pad=0)
    assert d2["position"] == i and not d2["tie"] and d2["gap"] > 1e-3
    assert first_divergence(model, ids, ref, list(ref), pad=0) is None
    assert first_divergence(model, ids, ref, ref[:5], pad=0)["note"].startswith("one output")


def test_divergence_report_rates(tied_pair):
    base, ids, g, b = tied_pair
    ref = greedy_reference(base, ids, 8)
    i = ref.index(g)
    runs = {
        "greedy": [{"id": "a", "output_ids": ref}, {"id": "b", "output_ids": ref}],
        "m": [{"id": "a", "output_ids": ref[:i] + [b] + ref[i + 1 :]}, {"id": "b", "output_ids": ref}],
    }
    rep = divergence_report(base, runs, {"a": ids, "b": ids}, pad=0, eos=None)["m"]
    assert rep["identical"] == 0.5 and rep["identical_or_tie"] == 1.0 and rep["ties"] == 1
    assert rep["divergences"][0]["id"] == "a"
