"""Static layer dropping (the baseline) and the importance warm start of the routers."""

import copy

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.core.testing.tiny_models import tiny_llama
from leanlm.dllm import DLLM, DLLMConfig
from leanlm.dllm.static import (
    drop_layers,
    keep_for_ratio,
    layer_importance,
    layers_for_target,
    warm_start_routers,
)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 2000, (2, 7), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100  # prompt
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_drop_layers_equals_skipping_those_blocks(untied_base):
    n = len(untied_base.model.layers)
    keep = [0, n - 1]
    plain = DLLM(copy.deepcopy(untied_base), DLLMConfig(dynamic=False, lora_rank=0)).eval()
    mask = torch.zeros(n)
    mask[keep] = 1
    b = _batch()
    with torch.no_grad():
        skipped = plain(b["input_ids"], b["attention_mask"], exec_override=mask).logits
        small = drop_layers(copy.deepcopy(untied_base), keep).eval()
        dropped = small(b["input_ids"]).logits
    assert len(small.model.layers) == 2 and small.config.num_hidden_layers == 2
    torch.testing.assert_close(dropped, skipped)


def test_layer_importance_is_the_loss_without_each_block(untied_base):
    plain = DLLM(copy.deepcopy(untied_base), DLLMConfig(dynamic=False, lora_rank=0))
    b = _batch()
    scores = layer_importance(plain, [b])
    n = plain.num_layers
    for layer in range(n):
        model = drop_layers(copy.deepcopy(untied_base), [i for i in range(n) if i != layer]).eval()
        with torch.no_grad():
            logits = model(b["input_ids"]).logits
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten())
        assert scores[layer] == pytest.approx(float(ce), rel=1e-6)


def test_keep_counts_and_bad_keep():
    assert keep_for_ratio(30, 0.567) == 17 and keep_for_ratio(4, 0.01) == 1 and keep_for_ratio(4, 2.0) == 4
    with pytest.raises(UserError, match=r"within 0\.\.3, got \[0, 5\]"):
        drop_layers(tiny_llama(), [0, 5])


def test_layers_for_target_keeps_unroutable_blocks_then_the_most_important():
    scores = [0.1, 0.2, 5.0, 1.0, 9.0, 3.0]  # blocks 0 and 1 cannot be skipped by a D-LLM
    assert layers_for_target(scores, 0.5, start_layer=2) == [0, 1, 4]
    assert layers_for_target(scores, 4 / 6, start_layer=2) == [0, 1, 2, 4]
    assert layers_for_target(scores, 0.5, start_layer=0) == [2, 4, 5]


def test_warm_start_routers_reproduce_the_static_choice(untied_base):
    d = DLLM(copy.deepcopy(untied_base), DLLMConfig(start_layer=1, reserve_initials=0, target=0.5)).double()
    n = d.num_layers
    scores = [float(s) for s in torch.arange(n).flip(0)]  # earlier blocks matter more
    keep = warm_start_routers(d, scores, margin=60.0)  # a margin the router's token term cannot flip
    assert keep == layers_for_target(scores, 0.5, 1)
    b = _batch()
    with torch.no_grad():
        execs = d.eval()(b["input_ids"], b["attention_mask"]).execs  # [B, T, L]
    expected = torch.tensor([1.0 if i in keep else 0.0 for i in range(n)], dtype=execs.dtype)
    assert torch.equal(execs, expected.expand_as(execs))
    # a small margin leaves the decision to the token in training: Gumbel sampling flips some
    warm_start_routers(d, scores, margin=2.0)
    torch.manual_seed(0)
    with torch.no_grad():
        sampled = d.train()(b["input_ids"], b["attention_mask"]).execs
    assert 0.0 < sampled[..., 1:].mean() < 1.0


def test_warm_start_rejects_bad_input(untied_base):
    d = DLLM(copy.deepcopy(untied_base), DLLMConfig(start_layer=1))
    with pytest.raises(UserError, match="one importance score per block"):
        warm_start_routers(d, [1.0], 2.0)
    with pytest.raises(UserError, match="margin"):
        warm_start_routers(d, [1.0] * d.num_layers, 0.0)
