"""Distillation losses between the quantized student and the full-precision teacher.

Inputs: ``student`` and ``teacher`` logits ``[B, T, V]`` at the same positions (no shift: both
models see the same tokens), ``labels [B, T]`` with -100 on padding. With ``P = softmax(logits)``:

* ``forward``: KL(P_T || P_S)     * ``reverse``: KL(P_S || P_T)
* ``cakld``: gamma * KL(P_S || P_T) + (1 - gamma) * KL(P_T || P_S), gamma = the teacher's confidence
* ``jsd``: beta * KL(P_T || M) + (1 - beta) * KL(P_S || M), M = beta P_T + (1 - beta) P_S, beta = 0.5
* ``tlsd``: token-scaled distillation: next-token cross-entropy of the student against P_T, each
  position weighted by softmax over the sequence of (teacher CE on the label / 10), detached
* ``ce``: the ordinary next-token cross-entropy on the labels (no teacher)

Reduction, as in the original: sum over the vocabulary, zero on padding, sum over the sequence,
mean over the batch (a per-sequence sum: the paper's learning rate 8e-6 is tuned to that scale).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.sft import IGNORE_INDEX

LOSSES = ("cakld", "forward", "reverse", "jsd", "tlsd", "ce")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position: sum_v p (log p - log q), ``[B, T]``."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _reduce(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (per_token * mask).sum(-1).mean()


class KDLoss(nn.Module):
    needs_teacher = True

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor
    ) -> torch.Tensor:
        mask = (labels != IGNORE_INDEX).to(student.dtype)
        log_s = F.log_softmax(student.float(), -1)
        log_t = F.log_softmax(teacher.float(), -1)
        return _reduce(self.per_token(log_s, log_t), mask.float())

    def per_token(self, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ForwardKL(KDLoss):
    def per_token(self, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        return _kl(log_t, log_s)


class ReverseKL(KDLoss):
    def per_token(self, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        return _kl(log_s, log_t)


class CAKLD(KDLoss):
    """Confidence-aware KL: mode-seeking (reverse) weighted by the teacher's confidence gamma."""

    def __init__(self, gamma: float):
        super().__init__()
        if not 0.0 <= gamma <= 1.0:
            raise UserError(f"CAKLD gamma must be in [0, 1], got {gamma}")
        self.gamma = float(gamma)

    def per_token(self, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        return self.gamma * _kl(log_s, log_t) + (1 - self.gamma) * _kl(log_t, log_s)


class JSD(KDLoss):
    def __init__(self, beta: float = 0.5):
        super().__init__()
        if not 0.0 < beta < 1.0:
            raise UserError(f"JSD beta must be in (0, 1), got {beta}")
        self.beta = float(beta)

    def per_token(self, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
        b = self.beta
        log_m = torch.logaddexp(log_t + math.log(b), log_s + math.log(1 - b))  # log(b P_T + (1-b) P_S)
        return b * _kl(log_t, log_m) + (1 - b) * _kl(log_s, log_m)


class TLSD(KDLoss):
    """Token-scaled logit distillation: positions the teacher finds hard weigh more."""

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor
    ) -> torch.Tensor:
        s, t, y = student[:, :-1].float(), teacher[:, :-1].float(), labels[:, 1:]
        mask = y != IGNORE_INDEX
        log_t = F.log_softmax(t, -1)
        ce_t = F.nll_loss(log_t.transpose(1, 2), y.clamp(min=0), reduction="none")  # [B, T-1]
        scale = torch.softmax((ce_t / 10).masked_fill(~mask, float("-inf")), dim=-1).detach()
        scale = torch.nan_to_num(scale)  # an all-padding row
        soft_ce = -(log_t.exp() * F.log_softmax(s, -1)).sum(-1)
        return (scale * soft_ce * mask).sum(-1).mean()


class CE(KDLoss):
    needs_teacher = False

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor
    ) -> torch.Tensor:  # noqa: ARG002
        return F.cross_entropy(
            student[:, :-1].float().transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX
        )


def build_loss(name: str, gamma: float | None = None) -> KDLoss:
    key = name.lower()
    if key not in LOSSES:
        raise UserError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    if key == "cakld":
        if gamma is None:
            raise ValueError("cakld needs gamma (teacher_confidence)")
        return CAKLD(gamma)
    return {"forward": ForwardKL, "reverse": ReverseKL, "jsd": JSD, "tlsd": TLSD, "ce": CE}[key]()


@torch.no_grad()
def teacher_confidence(teacher: nn.Module, batches: Iterable[dict[str, Any]], max_batches: int = 10) -> float:
    """gamma: the teacher's mean top-1 probability over non-padding positions of the first batches.

    Fixes of the original: padding is excluded, the mean is over the batches actually seen (no
    off-by-one), and it runs in a single process; under torch.distributed the ranks are averaged.
    """
    device = next(teacher.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        ids = batch["input_ids"].to(device)
        attn = batch.get("attention_mask")
        attn = attn.to(device) if attn is not None else torch.ones_like(ids)
        logits = teacher(input_ids=ids, attention_mask=attn).logits
        top1 = torch.softmax(logits.float(), -1).amax(-1)
        mask = attn.bool()
        if "labels" in batch:
            mask &= batch["labels"].to(device) != IGNORE_INDEX
        total += top1[mask].double().sum()
        count += mask.sum()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(count)
    if count.item() == 0:
        raise UserError("no non-padding tokens to estimate the teacher confidence (gamma) from")
    return float(total / count)
