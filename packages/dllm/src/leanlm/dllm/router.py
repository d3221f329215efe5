"""The per-block router: decides, per token, whether a transformer block runs.

logits = Linear(H -> R) -> RMSNorm(R) -> SiLU -> Linear(R -> 2)      # [..., 2], fp32
train:  w = straight-through Gumbel-softmax(logits, tau, hard)[..., 1]  (exactly 0/1 forward,
        soft gradient backward)
eval:   w = 1 if logits[..., 1] >= logits[..., 0] else 0             (softmax >= 0.5 = argmax)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Router(nn.Module):
    """Always fp32 (the decision is sensitive to rounding; it costs ~1% of a block)."""

    def __init__(self, hidden_size: int, router_hidden: int, bias: tuple[float, float] = (0.1, 2.0)):
        super().__init__()
        self.down = nn.Linear(hidden_size, router_hidden, dtype=torch.float32)
        self.norm = nn.RMSNorm(router_hidden, eps=1e-6, dtype=torch.float32)
        self.up = nn.Linear(router_hidden, 2, dtype=torch.float32)
        with torch.no_grad():
            self.up.bias.copy_(torch.tensor(bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: block input (residual stream) [..., H] -> logits [..., 2] (index 1 = execute)."""
        return self.up(F.silu(self.norm(self.down(x.to(self.down.weight.dtype)))))

    def flops_per_token(self) -> int:
        return 2 * (
            self.down.in_features * self.down.out_features + self.up.in_features * self.up.out_features
        )


def decide(logits: torch.Tensor, training: bool, tau: float = 1.0) -> torch.Tensor:
    """Execute indicator w in {0, 1}, shape ``logits.shape[:-1]``, fp32; differentiable in training."""
    if training:
        return F.gumbel_softmax(logits, tau=tau, hard=True)[..., 1]
    return (logits[..., 1] >= logits[..., 0]).float()
