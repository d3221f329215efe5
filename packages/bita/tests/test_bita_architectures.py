"""BiTA's main path on every supported architecture (tiny random configs): the packed training
step learns, and tree draft-and-verify decoding stays token-identical to greedy ``generate``."""

from __future__ import annotations

import pytest
import torch

from leanlm.bita.data import build_example
from leanlm.bita.decoding import BiTADecoder, greedy_reference
from leanlm.bita.model import BiTAConfig, BiTAModel
from leanlm.core.sft import PaddingCollator
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_model, tiny_tokenizer

PROMPTS = ["The quick brown fox jumps over the lazy dog. The quick brown", "1, 2, 3, 4, 5, 6,"]


def _bita(arch: str) -> BiTAModel:
    return BiTAModel(
        tiny_model(arch, num_layers=2), BiTAConfig(num_masks=3, num_prefix=4, prefix_dropout=0.0)
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_training_step_lowers_the_mask_loss(arch):
    model = _bita(arch).train()
    ex = build_example(
        [5, 17, 99, 4], list(range(301, 313)), num_masks=3, vocab_size=model.vocab_size, cutoff=128
    )
    batch = PaddingCollator(0, pad_to_multiple_of=4)([ex])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=3e-2)
    losses = []
    for _ in range(6):
        loss = model(**batch)["loss"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # a big vocabulary and only the adapter training: the loss falls steadily, not far, in 6 steps
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.1, losses
    base_grads = [p.grad for p in model.base.parameters() if p.grad is not None]
    assert not base_grads  # the base model stays frozen


@pytest.mark.parametrize("engine", ["auto", "hf"])  # auto: the fast engine where it applies
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tree_decoding_equals_greedy(arch, engine):
    model = _bita(arch).eval()
    tok = tiny_tokenizer(arch)
    dec = BiTADecoder(model, "tri:5", engine=engine)
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        ref = greedy_reference(model.base, ids, 24)
        out = dec.generate(ids, 24)
        assert out.tokens == ref, (arch, engine, text)
        assert out.forwards == len(out.accepted) and sum(out.accepted) == len(ref)
