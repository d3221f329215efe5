import math

import pytest
import torch

from leanlm.core.datasets import load_records
from leanlm.core.errors import UserError
from leanlm.core.evaluation import heldout_texts, perplexity, token_stream

TEXTS = [
    "To be, or not to be, that is the question.",
    "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune.",
    "Or to take arms against a sea of troubles, and by opposing end them.",
    "To die, to sleep; no more; and by a sleep to say we end the heart-ache.",
] * 4


def _manual(model, tokenizer, texts, seqlen):
    """The GPTQ loop written out: HF's own shifted loss per chunk, mean over chunks, exp."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids
    n = ids.shape[1] // seqlen
    losses = []
    with torch.no_grad():
        for i in range(n):
            chunk = ids[:, i * seqlen : (i + 1) * seqlen]
            losses.append(model(chunk, labels=chunk).loss.item())
    return n, math.exp(sum(losses) / n)


def test_matches_manual_gptq_loop(tiny_model, tokenizer):
    n, ppl = _manual(tiny_model, tokenizer, TEXTS, seqlen=32)
    res = perplexity(tiny_model, tokenizer, TEXTS, seqlen=32)
    assert res["n_chunks"] == n >= 3 and res["n_tokens"] == n * 32 and res["seqlen"] == 32
    assert res["ppl"] == pytest.approx(ppl, rel=1e-5)
    assert res["nll"] == pytest.approx(math.log(ppl), rel=1e-5)
    # a random-init model is close to uniform over the 49,152-token vocabulary
    assert 0.5 * 49152 < res["ppl"] < 2 * 49152
    batched = perplexity(tiny_model, tokenizer, TEXTS, seqlen=32, batch_size=3)
    assert batched["ppl"] == pytest.approx(res["ppl"], rel=1e-5)
    first2 = perplexity(tiny_model, tokenizer, TEXTS, seqlen=32, max_chunks=2)
    assert first2["n_chunks"] == 2


def test_no_grad_option_matches_inference_mode(tiny_model, tokenizer):
    default = perplexity(tiny_model, tokenizer, TEXTS, seqlen=32, max_chunks=2)
    no_grad = perplexity(tiny_model, tokenizer, TEXTS, seqlen=32, max_chunks=2, inference_mode=False)
    assert no_grad == default  # same forward, only the grad mode differs
    assert all(p.grad is None for p in tiny_model.parameters())


def test_prefix_tokenization_equals_full(tokenizer):
    texts = [r["text"] for r in load_records("text", limit=120)]
    full = token_stream(tokenizer, texts)
    part = token_stream(tokenizer, texts, need=3000)
    assert len(part) >= 3000 and len(part) < len(full)
    assert part[:3000] == full[:3000]


def test_errors(tiny_model, tokenizer):
    with pytest.raises(UserError, match="fewer than one chunk"):
        perplexity(tiny_model, tokenizer, ["short"], seqlen=64)
    with pytest.raises(UserError):
        perplexity(tiny_model, tokenizer, [], seqlen=64)
    with pytest.raises(UserError):
        perplexity(tiny_model, tokenizer, TEXTS, seqlen=1)


def test_heldout_split_is_fixed_and_disjoint():
    test = heldout_texts("text", "test", fraction=0.1)
    calib = heldout_texts("text", "calib", fraction=0.1)
    all_texts = [r["text"] for r in load_records("text")]
    assert len(test) + len(calib) == len(all_texts)
    assert not set(test) & set(calib)
    assert 0.07 < len(test) / len(all_texts) < 0.13
    assert heldout_texts("text", "test", fraction=0.1) == test  # deterministic
    # a larger fraction only moves records from calib to test
    assert set(test) <= set(heldout_texts("text", "test", fraction=0.2))
    with pytest.raises(UserError):
        heldout_texts("text", "train")
    with pytest.raises(UserError):
        heldout_texts("text", fraction=1.5)


@pytest.mark.slow
def test_embedded_model_on_shakespeare(embedded_model, tokenizer):
    texts = heldout_texts("text", "test", fraction=0.1)
    a = perplexity(embedded_model, tokenizer, texts, seqlen=64, max_chunks=2)
    b = perplexity(embedded_model, tokenizer, texts, seqlen=64, max_chunks=2)
    assert a == b  # reproducible to the last bit
    assert a["n_chunks"] == 2 and math.isfinite(a["ppl"])
    # a trained model is far better than uniform over 49,152 tokens on English text
    assert 1.0 < a["ppl"] < 1000
