"""The D-LLM objective: response-only cross-entropy plus a per-token execution-ratio penalty.

r_t      = mean_l w[t, l]                     (layers below start_layer count as executed)
ratio    = sum_t |r_t - target| * m_t / sum_t m_t      (m: real tokens, reserved ones excluded)
           (scope "batch": |sum_t r_t m_t / sum_t m_t - target|, only the batch mean is pulled,
            so some tokens may run more layers than others)
loss     = CE(response tokens) + lambda(p) * ratio
lambda(p)= lambda_max * sin(pi/2 * clip(p / ramp, 0, 1))  (p: fraction of training done; ramp 1 in the original)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from leanlm.core.sft import IGNORE_INDEX


def lambda_schedule(progress: float, lambda_max: float, ramp: float = 1.0) -> float:
    """Sine ramp from 0 (start) to ``lambda_max`` at fraction ``ramp`` of training, then flat."""
    return lambda_max * math.sin(math.pi / 2 * min(max(progress / ramp, 0.0), 1.0))


def response_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token CE. Either full logits [B, T, V] with labels [B, T] (-100 on prompt and padding;
    shifted here), or logits [N, V] already gathered at the predicting positions with targets [N]."""
    if logits.dim() == 2:
        return F.cross_entropy(logits.float(), labels)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
    )


def exec_ratio(execs: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean executed fraction over the masked tokens: execs [B, T, L], token_mask [B, T] bool -> scalar."""
    m = token_mask.float()
    return (execs.mean(-1) * m).sum() / m.sum().clamp(min=1.0)


def ratio_loss(
    execs: torch.Tensor, token_mask: torch.Tensor, target: float, scope: str = "token"
) -> torch.Tensor:
    """execs [B, T, L] in {0,1} (ST gradient), token_mask [B, T] bool -> scalar.

    scope "token" (the original): mean_t |mean_l w - target|; "batch": |mean_t mean_l w - target|.
    """
    if scope == "batch":
        return (exec_ratio(execs, token_mask) - target).abs()
    if scope != "token":
        raise ValueError(f"ratio loss scope must be 'token' or 'batch', got {scope!r}")
    per_token = (execs.mean(-1) - target).abs()
    m = token_mask.float()
    return (per_token * m).sum() / m.sum().clamp(min=1.0)


def dllm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    execs: torch.Tensor,
    token_mask: torch.Tensor,
    target: float,
    lam: float,
    dynamic: bool = True,
    scope: str = "token",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, ce, ratio). With no routers (dense baseline) the ratio term is reported but not added."""
    ce = response_ce(logits, labels)
    ratio = ratio_loss(execs, token_mask, target, scope)
    total = ce + lam * ratio if dynamic else ce
    return total, ce, ratio
