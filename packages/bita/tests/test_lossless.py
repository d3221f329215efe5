"""BiTA decoding must be token-identical to model.generate(do_sample=False)."""

import copy
import random

import pytest
import torch

from leanlm.bita.decoding import BiTADecoder, TreeSpec, greedy_reference
from leanlm.bita.model import BiTAConfig, BiTAModel
from leanlm.core.testing import DEVICES

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog. The quick brown",
    "def add(a, b):\n    return",
    "1, 2, 3, 4, 5, 6,",
    "Write a short poem about the sea.",
]
TREES = ["5", "3,2,1", "1,1,1", "2", "4,1"]


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tree", TREES)
def test_random_tiny_llama_untrained_adapter(tiny_bita, tokenizer, tree, device):
    model = tiny_bita if device == "cpu" else copy.deepcopy(tiny_bita).to(device)
    dec = BiTADecoder(model, tree)
    for i, text in enumerate(PROMPTS):
        ids = ids_of(tokenizer, text)
        n = [1, 7, 33, 48, 20][i]
        ref = greedy_reference(model.base, ids, n)
        out = dec.generate(ids, n)
        assert out.tokens == ref, (tree, text)
        assert len(out.tokens) == n
        assert out.forwards == len(out.accepted) and sum(out.accepted) >= n


def test_eos_inside_the_limit(tiny_bita, tokenizer):
    """Pick as EOS a token greedy decoding emits mid-way: both must stop right after it."""
    dec = BiTADecoder(tiny_bita, "5")
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


@pytest.mark.parametrize("tree", ["5", "3,2,1", "1,1,1"])
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
            accepted += out.accepted
    assert sum(accepted) / len(accepted) > 1.5  # the oracle drafts are mostly accepted
    assert max(accepted) == len(TreeSpec.parse(tree, 3).widths) + 1  # whole spine + bonus happens


def test_kv_cache_path_equals_no_cache_path(tiny_bita, tokenizer):
    for seed, text in enumerate(PROMPTS[1:4]):
        ids = ids_of(tokenizer, text)
        ref = greedy_reference(tiny_bita.base, ids, 30)
        a = OracleDecoder(tiny_bita, "3,2,1", ref, seed=seed, use_cache=True).generate(ids, 30)
        b = OracleDecoder(tiny_bita, "3,2,1", ref, seed=seed, use_cache=False).generate(ids, 30)
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
    dec = BiTADecoder(bita, "5")
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
    for tree, qs in [("5", questions), ("1,1,1", questions[:1])]:
        dec = BiTADecoder(bita, tree)
        for q in qs:
            ids = ids_of(tokenizer, format_prompt("chat", q, tokenizer=tokenizer))
            ref = greedy_reference(embedded_model, ids, 20, eos_token_id=eos)
            assert dec.generate(ids, 20, eos_token_id=eos).tokens == ref
