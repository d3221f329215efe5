"""BiTA decoding must be token-identical to model.generate(do_sample=False)."""

import copy
import random

import pytest
import torch

from leanlm.bita.decoding import BiTADecoder, TreeSpec, greedy_reference
from leanlm.bita.model import BiTAConfig, BiTAModel
from leanlm.core.testing.fixtures import DEVICES

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog. The quick brown",
    "def add(a, b):\n    return",
    "1, 2, 3, 4, 5, 6,",
    "Write a short poem about the sea.",
]
TREES = ["tri:5", "3-2-1", "1-1-1", "tri:2", "4-1", "1"]


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_random_tiny_llama_untrained_adapter(tiny_bita, tokenizer, tree, device, engine):
    model = tiny_bita if device == "cpu" else copy.deepcopy(tiny_bita).to(device)
    dec = BiTADecoder(model, tree, engine=engine)
    for i, text in enumerate(PROMPTS):
        ids = ids_of(tokenizer, text)
        n = [1, 7, 33, 48, 20][i]
        ref = greedy_reference(model.base, ids, n)
        out = dec.generate(ids, n)
        assert out.tokens == ref, (tree, text)
        assert len(out.tokens) == n
        assert out.forwards == len(out.accepted) and sum(out.accepted) == n


def test_eos_inside_the_limit(tiny_bita, tokenizer):
    """Pick as EOS a token greedy decoding emits mid-way: both must stop right after it."""
    dec = BiTADecoder(tiny_bita, "tri:5")
    checked = 0
    for text in PROMPTS:
        ids = ids_of(tokenizer, text)
        free = greedy_reference(tiny_bita.base, ids, 40)
        eos = free[len(free) // 2]
        ref = greedy_reference(tiny_bita.base, ids, 40, eos_token_id=eos)
        assert ref[-1] == eos and len(ref) <= len(free) // 2 + 1
        out = dec.generate(ids, 40, eos_token_id=eos)
        assert out.tokens == ref
        # a list of EOS ids works as well (one of them never appears)
        assert dec.generate(ids, 40, eos_token_id=[eos, 1]).tokens == greedy_reference(
            tiny_bita.base, ids, 40, eos_token_id=[eos, 1]
        )
        checked += 1
    assert checked == len(PROMPTS)


class OracleDecoder(BiTADecoder):
    """Drafts taken from the true greedy continuation (sometimes at a non-top slot, sometimes
    wrong), so that long acceptances, side branches and EOS inside an accepted run all occur."""

    def __init__(self, model, tree, reference, seed=0, **kw):
        super().__init__(model, tree, **kw)
        self.reference = reference
        self.rng = random.Random(seed)
        self.produced = 0

    def _drafts(self, mask_logits, produced):
        drafts = super()._drafts(mask_logits, produced)
        for m, level in enumerate(drafts):
            j = produced + m
            if j < len(self.reference) and self.rng.random() < 0.8:
                true = self.reference[j]
                level[:] = [t if t != true else (true + 1 + k) % 40000 for k, t in enumerate(level)]
                slot = 0 if self.rng.random() < 0.7 else self.rng.randrange(len(level))
                level[slot] = true
        return drafts


@pytest.mark.parametrize("tree", ["tri:5", "3-2-1", "1-1-1"])
def test_oracle_drafts_stay_lossless_and_accept_many(tiny_bita, tokenizer, tree):
    accepted = []
    for seed, text in enumerate(PROMPTS[1:4]):
        ids = ids_of(tokenizer, text)
        ref = greedy_reference(tiny_bita.base, ids, 40)
        eos = ref[25]
        ref_eos = greedy_reference(tiny_bita.base, ids, 40, eos_token_id=eos)
        for limit, e, expect in [(40, None, ref), (40, eos, ref_eos), (17, None, ref[:17])]:
            dec = OracleDecoder(tiny_bita, tree, expect, seed=seed)
            out = dec.generate(ids, limit, eos_token_id=e)
            assert out.tokens == expect
            # tokens of the last step cut off by EOS or the budget are not counted
            assert sum(out.accepted) == len(out.tokens) and min(out.accepted) >= 1
            assert out.mean_accepted == pytest.approx(len(out.tokens) / out.forwards)
            accepted += out.accepted
    assert sum(accepted) / len(accepted) > 1.5  # the oracle drafts are mostly accepted
    assert max(accepted) == TreeSpec.parse(tree, 3).depth + 1  # whole spine + bonus happens


def test_mean_accepted_ignores_tokens_cut_off(tiny_bita, tokenizer):
    """Oracle drafts accept whole spines; a budget that ends inside a step must not be over-counted."""
    ids = ids_of(tokenizer, PROMPTS[1])
    ref = greedy_reference(tiny_bita.base, ids, 40)
    cut_inside = 0
    for limit in range(2, 14):
        dec = OracleDecoder(tiny_bita, "1-1-1", ref[:limit], seed=limit)
        raw = []
        step = dec.step

        def counting(st, step=step, raw=raw):
            emitted = step(st)
            raw.append(len(emitted))
            return emitted

        dec.step = counting
        out = dec.generate(ids, limit)
        assert out.tokens == ref[:limit]
        assert out.accepted[:-1] == raw[:-1] and out.accepted[-1] <= raw[-1]
        cut_inside += out.accepted[-1] < raw[-1]
        assert out.mean_accepted == pytest.approx(limit / out.forwards)
    assert cut_inside >= 1  # the case the old count got wrong did occur


@pytest.mark.parametrize("tree", ["3-2-1", "1", "tri:5"])
def test_preallocated_cache_equals_previous_path(tiny_bita, tokenizer, tree):
    """FastEngine (preallocated buffer, accepted rows copied, split attention) = the HF DynamicCache
    path with index_select = no cache at all: same tokens and the same acceptance lengths."""
    for seed, text in enumerate(PROMPTS[1:4]):
        ids = ids_of(tokenizer, text)
        ref = greedy_reference(tiny_bita.base, ids, 30)
        runs = [
            OracleDecoder(tiny_bita, tree, ref, seed=seed, engine=engine, use_cache=cache).generate(ids, 30)
            for engine, cache in [("fast", True), ("hf", True), ("hf", False)]
        ]
        assert runs[0].tokens == runs[1].tokens == runs[2].tokens == ref
        assert runs[0].accepted == runs[1].accepted == runs[2].accepted
        assert max(runs[0].accepted) > 1


def test_fast_engine_hidden_states_equal_hf_engine(tiny_bita, tokenizer):
    """One tree forward after a prefix of context: the two engines give the same hidden states."""
    ids = torch.tensor(ids_of(tokenizer, PROMPTS[4]))
    cands = torch.tensor([11, 12, 13, 14, 15, 16])
    fast, hf = BiTADecoder(tiny_bita, "3-2-1", engine="fast"), BiTADecoder(tiny_bita, "3-2-1", engine="hf")
    a = fast.run_once(ids, cands, fast.layout)
    b = hf.run_once(ids, cands, hf.layout)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_split_attention_equals_masked_attention(device):
    """Context part (fused, no mask) merged with the small masked part = one masked softmax."""
    from leanlm.bita.engine import attention_with_lse, attention_with_lse_reference, merge_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 12, 16, generator=g)
    kc, vc = torch.randn(1, 2, 40, 16, generator=g), torch.randn(1, 2, 40, 16, generator=g)
    ks, vs = torch.randn(1, 2, 7, 16, generator=g), torch.randn(1, 2, 7, 16, generator=g)
    vis = torch.rand(12, 7, generator=g) < 0.5
    vis[:, 0] = True
    small = torch.zeros(12, 7).masked_fill(~vis, torch.finfo(torch.float32).min)
    q, kc, vc, ks, vs, small = (t.to(device) for t in (q, kc, vc, ks, vs, small))
    o_c, l_c = attention_with_lse(q, kc, vc, 0.25)
    o_s, l_s = attention_with_lse_reference(q, ks, vs, 0.25, small)
    tol = 1e-5 if device == "cpu" else 1e-4  # CUDA kernels sum in another order
    merged = merge_attention(o_c, l_c, o_s, l_s)
    full_mask = torch.cat([torch.zeros(12, 40, device=device), small], dim=1)
    ref = torch.softmax(q @ torch.cat([kc, ks], 2).transpose(-1, -2) * 0.25 + full_mask, -1) @ torch.cat(
        [vc, vs], 2
    )
    torch.testing.assert_close(merged, ref, atol=tol, rtol=tol)
    torch.testing.assert_close(l_c, torch.logsumexp(q @ kc.transpose(-1, -2) * 0.25, -1), atol=tol, rtol=tol)


def test_kv_cache_path_equals_no_cache_path(tiny_bita, tokenizer):
    for seed, text in enumerate(PROMPTS[1:4]):
        ids = ids_of(tokenizer, text)
        ref = greedy_reference(tiny_bita.base, ids, 30)
        a = OracleDecoder(tiny_bita, "3-2-1", ref, seed=seed, use_cache=True).generate(ids, 30)
        b = OracleDecoder(tiny_bita, "3-2-1", ref, seed=seed, use_cache=False).generate(ids, 30)
        assert a.tokens == b.tokens == ref
        assert a.accepted == b.accepted


def test_trained_adapter_is_lossless(tiny_model, tokenizer, tmp_path):
    """A few optimiser steps move the adapter; decoding still equals greedy."""
    from leanlm.bita.train import train_adapter

    base = copy.deepcopy(tiny_model)
    bita = BiTAModel(base, BiTAConfig(num_masks=3, num_prefix=4, prefix_dropout=0.0))
    before = bita.prefix.detach().clone()
    records = []
    for i in range(6):
        p = f"Count with me {i}:"
        out = greedy_reference(base, ids_of(tokenizer, p), 24)
        records.append({"prompt": p, "output": tokenizer.decode(out, skip_special_tokens=True)})
    summary = train_adapter(
        bita,
        tokenizer,
        records,
        tmp_path / "adapter",
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=3e-2,
        logging_steps=1,
        save_steps=1000,
    )
    assert summary["steps"] == 4
    assert not torch.equal(before, bita.prefix.detach())
    dec = BiTADecoder(bita, "tri:5")
    for text in PROMPTS:
        ids = ids_of(tokenizer, text)
        assert dec.generate(ids, 30).tokens == greedy_reference(base, ids, 30)


def test_embedded_model_is_lossless(embedded_model, tokenizer):
    from leanlm.core.templates import format_prompt

    bita = BiTAModel(
        copy.deepcopy(embedded_model), BiTAConfig(num_masks=3, num_prefix=8, prefix_dropout=0.0)
    ).eval()
    eos = embedded_model.generation_config.eos_token_id
    questions = ["What is 2+2? Answer with one word.", "Repeat: a b c a b c a b c"]
    for tree, qs in [("tri:5", questions), ("1-1-1", questions[:1])]:
        dec = BiTADecoder(bita, tree)
        for q in qs:
            ids = ids_of(tokenizer, format_prompt("chat", q, tokenizer=tokenizer))
            ref = greedy_reference(embedded_model, ids, 20, eos_token_id=eos)
            assert dec.generate(ids, 20, eos_token_id=eos).tokens == ref
