"""Static layer dropping (Shortened-LLaMA, perplexity criterion): the baseline D-LLM should beat.

importance(l) = loss of the model with block l removed, on calibration data; the blocks whose
removal hurts least are dropped for every token. ``keep_for_ratio`` picks how many blocks to keep
so the pruned model costs what a D-LLM with a given execution ratio costs.
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
