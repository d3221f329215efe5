"""Compute accounting: FLOPs of a D-LLM request against the dense model.

Per token t (position p, counting from 0) and block l:
    block(l, p) = 2 * (weights of q, k, v, o, gate, up, down) + 4 * n_heads * head_dim * (p + 1)
    router      = 2 * (H * R + R * 2) on every routed block, executed or not
    head        = 2 * H * V
flops_ratio compares blocks + routers with the dense blocks; flops_ratio_with_head adds the LM head
to both sides. Attention is charged for all p + 1 earlier positions in both, so skipping saves
exactly the executed-pair share of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class CostModel:
    linear: list[int]  # per layer: 2 * matmul weights
    attn_per_key: list[int]  # per layer: 4 * n_heads * head_dim
    router: list[int]  # per layer: router FLOPs per token (0 without a router)
    head: int

    @classmethod
    def of(cls, dllm: nn.Module) -> CostModel:
        linear, attn, router = [], [], []
        for i, layer in enumerate(dllm.layers):
            weights = sum(
                m.weight.numel()
                for name, m in layer.named_modules()
                if isinstance(m, nn.Linear) and "lora_" not in name
            )
            linear.append(2 * weights)
            heads = dllm.lm.config.num_attention_heads  # also right for Phi-3's fused qkv_proj
            attn.append(4 * heads * layer.self_attn.head_dim)
            r = dllm.router(i)
            router.append(r.flops_per_token() if r is not None else 0)
        lm_head = dllm.lm.lm_head
        return cls(linear, attn, router, 2 * lm_head.in_features * lm_head.out_features)


def request_costs(cost: CostModel, execs: torch.Tensor, positions: torch.Tensor) -> dict[str, float]:
    """execs [N, L] bool for the N tokens a request processed; positions [N] -> ratios against dense."""
    execs = execs.double().cpu()
    ctx = positions.double().cpu()[:, None] + 1  # [N, 1]
    lin = torch.tensor(cost.linear, dtype=torch.float64)
    att = torch.tensor(cost.attn_per_key, dtype=torch.float64)
    per_pair = lin[None, :] + att[None, :] * ctx  # [N, L]
    dense = float(per_pair.sum())
    routers = float(sum(cost.router)) * execs.shape[0]
    dynamic = float((per_pair * execs).sum()) + routers
    head = float(cost.head) * execs.shape[0]
    return {
        "tokens": int(execs.shape[0]),
        "exec_ratio": float(execs.mean()) if execs.numel() else 1.0,
        "flops_ratio": dynamic / dense if dense else 1.0,
        "flops_ratio_with_head": (dynamic + head) / (dense + head) if dense else 1.0,
        "router_flops_share": routers / dense if dense else 0.0,
    }
