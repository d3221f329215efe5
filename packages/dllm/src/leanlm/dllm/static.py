"""Static layer dropping (Shortened-LLaMA, perplexity criterion): the baseline D-LLM should beat.

importance(l) = loss of the model with block l removed, on calibration data; the blocks whose
removal hurts least are dropped for every token. ``keep_for_ratio`` picks how many blocks to keep
so the pruned model costs what a D-LLM with a given execution ratio costs.

``warm_start_routers`` reuses the same ranking to initialise a D-LLM's routers: the router biases
start at the static allocation (important blocks execute, the rest skip) and training then makes
the decision depend on the token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanlm.core.errors import UserError


@torch.no_grad()
def layer_importance(dllm: Any, batches: list[dict[str, torch.Tensor]]) -> list[float]:
    """Response CE with each block skipped in turn (higher = more important). ``dllm``: a dense DLLM."""
    dllm.eval()
    n = dllm.num_layers
    scores = []
    for layer in range(n):
        keep = torch.ones(n)
        keep[layer] = 0
        total = 0.0
        for batch in batches:
            out = dllm(batch["input_ids"], batch["attention_mask"], batch["labels"], exec_override=keep)
            total += float(out.ce_loss)
        scores.append(total / len(batches))
    return scores


def keep_for_ratio(num_layers: int, ratio: float) -> int:
    return max(1, min(num_layers, round(ratio * num_layers)))


def layers_for_target(scores: list[float], target: float, start_layer: int) -> list[int]:
    """The blocks a static model at execution ratio ``target`` keeps when blocks below
    ``start_layer`` always run (a D-LLM cannot skip them): those, plus the most important rest."""
    n = len(scores)
    always = list(range(min(start_layer, n)))
    extra = max(0, keep_for_ratio(n, target) - len(always))
    ranked = sorted(range(start_layer, n), key=lambda i: -scores[i])
    return sorted(always + ranked[:extra])


@torch.no_grad()
def warm_start_routers(dllm: Any, scores: list[float], margin: float = 2.0) -> list[int]:
    """Bias each router toward the static choice at ``dllm.config.target``; returns the kept blocks.

    The router's logit gap (execute - skip) starts at ``+margin`` on kept blocks and ``-margin`` on
    the others, so P(execute) under Gumbel sampling starts at sigmoid(+-margin) (0.88 / 0.12 for 2).
    """
    if len(scores) != dllm.num_layers:
        raise UserError(f"need one importance score per block ({dllm.num_layers}), got {len(scores)}")
    if margin <= 0:
        raise UserError(f"margin must be > 0, got {margin}")
    keep = layers_for_target(scores, dllm.config.target, dllm.config.start_layer)
    for name, router in dllm.routers.items():
        gap = margin if int(name) in keep else -margin
        router.up.bias.copy_(torch.tensor([-gap / 2, gap / 2], dtype=router.up.bias.dtype))
    return keep


def drop_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """Keep only blocks ``keep`` (in order) of a LLaMA-family causal LM, in place."""
    layers = model.model.layers
    if not keep or any(i < 0 or i >= len(layers) for i in keep):
        raise UserError(f"layers to keep must be within 0..{len(layers) - 1}, got {keep}")
    model.model.layers = nn.ModuleList([layers[i] for i in sorted(keep)])
    for new_idx, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_idx
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in sorted(keep)]
    return model
