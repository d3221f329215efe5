"""Hybrid drafts (prompt-lookup branch in the same forward) stay lossless; speculative sampling
follows the base model's distribution (chi-square on a tiny vocabulary)."""

import copy
import itertools

import pytest
import torch

from leanlm.bita.decoding import BiTADecoder, greedy_reference, lookup_draft, merge_chain, split_method
from leanlm.bita.model import BiTAConfig, BiTAModel
from leanlm.core.errors import UserError

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown",
    "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return",
    "1, 2, 3, 4, 5, 6,",
    "Write a short poem about the sea.",
]


def test_lookup_draft_by_hand():
    h = torch.tensor
    assert lookup_draft(h([1, 2, 3, 9, 1, 2, 3]), 3) == [9, 1, 2]  # 3-gram (1,2,3) seen at 0
    assert lookup_draft(h([1, 2, 3, 9, 1, 2, 3]), 10) == [9, 1, 2, 3]
    assert lookup_draft(h([5, 6, 7]), 3) == []
    assert lookup_draft(h([4, 1, 8, 2, 1]), 2) == [8, 2]  # falls back to the 1-gram (1)
    assert lookup_draft(h([1, 7, 1, 9, 1]), 1) == [9]  # the latest occurrence wins
    assert lookup_draft(h([3]), 3) == []


def test_merge_chain_by_hand():
    # nodes: 1 = 10 (under root), 2 = 11 (under root), 3 = 12 (under 1)
    tokens, parents = [10, 11, 12], [-1, 0, 0, 1]
    assert merge_chain(tokens, parents, [10, 12, 13]) == ([10, 11, 12, 13], [-1, 0, 0, 1, 3])
    assert merge_chain(tokens, parents, [11, 5, 6]) == ([10, 11, 12, 5, 6], [-1, 0, 0, 1, 2, 4])
    assert merge_chain(tokens, parents, [7]) == ([10, 11, 12, 7], [-1, 0, 0, 1, 0])
    assert merge_chain([], [-1], [4, 4]) == ([4, 4], [-1, 0, 1])


def test_split_method():
    assert split_method("1-1") == ("1-1", 0)
    assert split_method("3-2-1+pld:4") == ("3-2-1", 4)
    for bad in ["1+pld", "1+pld:0", "1+lookup:3", "1+pld:x"]:
        with pytest.raises(UserError, match="hybrid"):
            split_method(bad)


@pytest.mark.parametrize("engine", ["fast", "hf"])
@pytest.mark.parametrize("tree", ["1", "3-2-1", "1-1-1"])
def test_hybrid_drafts_are_lossless(tiny_bita, tokenizer, tree, engine):
    plain = BiTADecoder(tiny_bita, tree, engine=engine)
    hybrid = BiTADecoder(tiny_bita, tree, engine=engine, lookup_tokens=3)
    fwd_plain = fwd_hybrid = 0
    for i, text in enumerate(PROMPTS):
        ids = tokenizer(text)["input_ids"]
        n = [40, 33, 24, 17][i]
        ref = greedy_reference(tiny_bita.base, ids, n)
        a, b = plain.generate(ids, n), hybrid.generate(ids, n)
        assert a.tokens == ref and b.tokens == ref, (tree, text)
        assert sum(b.accepted) == n
        fwd_plain += a.forwards
        fwd_hybrid += b.forwards
    # the random model's greedy text repeats itself: the lookup branch must be accepted often
    assert fwd_hybrid < fwd_plain


def test_hybrid_with_eos_inside_a_lookup_run(tiny_bita, tokenizer):
    ids = tokenizer(PROMPTS[0])["input_ids"]
    free = greedy_reference(tiny_bita.base, ids, 40)
    eos = free[30]
    ref = greedy_reference(tiny_bita.base, ids, 40, eos_token_id=eos)
    out = BiTADecoder(tiny_bita, "1", lookup_tokens=5).generate(ids, 40, eos_token_id=eos)
    assert out.tokens == ref and sum(out.accepted) == len(ref)


# ---------------------------------------------------------------------- sampling

V = 8


@pytest.fixture(scope="module")
def tiny_vocab_bita():
    from leanlm.core.testing.tiny_models import tiny_llama

    base = tiny_llama(vocab_size=V, num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, seed=3)
    with torch.no_grad():  # sharper, unequal next-token distributions than the random init gives
        base.get_output_embeddings().weight.mul_(8.0)
    return BiTAModel(copy.deepcopy(base), BiTAConfig(num_masks=2, num_prefix=2, prefix_dropout=0.0)).eval()


def reference_probs(logits, temperature, top_p):
    """Independent reference: softmax(logits / T), keep tokens in descending order until the kept
    mass reaches top_p, renormalise (written as a loop, not like the decoder's code)."""
    p = torch.softmax(logits.double() / temperature, -1)
    order = sorted(range(len(p)), key=lambda i: -float(p[i]))
    kept, mass = [], 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.append(i)
        mass += float(p[i])
    out = torch.zeros_like(p)
    out[kept] = p[kept]
    return out / out.sum()


def exact_sequence_probs(base, prompt, length, temperature, top_p):
    """P(sequence) = product of the warped next-token probabilities, by plain full forwards."""
    nxt = {}
    for j in range(length):  # every prefix of length j, once
        for pre in itertools.product(range(V), repeat=j):
            with torch.no_grad():
                logits = base(torch.tensor([prompt + list(pre)])).logits[0, -1]
            nxt[pre] = reference_probs(logits, temperature, top_p)
    probs = {}
    for seq in itertools.product(range(V), repeat=length):
        total = 1.0
        for j in range(length):
            total *= float(nxt[seq[:j]][seq[j]])
        probs[seq] = total
    return probs


def chi_square_p(counts, probs, n):
    """Pearson chi-square p-value, categories with expected count < 5 pooled."""
    stat, df, pooled_o, pooled_e = 0.0, -1, 0.0, 0.0
    for seq, p in probs.items():
        e, o = n * p, counts.get(seq, 0)
        if e < 5:
            pooled_o, pooled_e = pooled_o + o, pooled_e + e
            continue
        stat += (o - e) ** 2 / e
        df += 1
    if pooled_e > 0:
        stat += (pooled_o - pooled_e) ** 2 / max(pooled_e, 1e-12)
        df += 1
    return float(
        torch.special.gammaincc(
            torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)
        )
    )


@pytest.mark.parametrize("tree,lookup", [("2-1", 0), ("1", 2)])
def test_sampling_matches_base_distribution(tiny_vocab_bita, tree, lookup):
    model = tiny_vocab_bita
    prompt, length, T, top_p, n = [1, 5, 2, 5, 2], 3, 0.9, 0.85, 1500
    probs = exact_sequence_probs(model.base, prompt, length, T, top_p)
    assert abs(sum(probs.values()) - 1) < 1e-9
    dec = BiTADecoder(model, tree, temperature=T, top_p=top_p, lookup_tokens=lookup)
    counts: dict[tuple, int] = {}
    multi = 0
    for seed in range(n):
        dec.seed = seed
        out = dec.generate(prompt, length)
        assert len(out.tokens) == length
        counts[tuple(out.tokens)] = counts.get(tuple(out.tokens), 0) + 1
        multi += max(out.accepted) > 1
    assert multi > n // 10  # drafts were accepted, so the acceptance rule was exercised
    assert all(probs[s] > 0 for s in counts)  # nothing outside the nucleus
    assert chi_square_p(counts, probs, n) > 1e-3
    # the test has power: the same samples against the distribution at another temperature fail
    wrong = exact_sequence_probs(model.base, prompt, length, 1.3, 1.0)
    assert chi_square_p(counts, wrong, n) < 1e-6


def test_sampling_argument_errors(tiny_bita):
    with pytest.raises(UserError, match="temperature"):
        BiTADecoder(tiny_bita, "1", temperature=-1)
    with pytest.raises(UserError, match="top_p"):
        BiTADecoder(tiny_bita, "1", temperature=1.0, top_p=0.0)
