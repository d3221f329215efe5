"""Weight quantizers: asymmetric INT-b and asymmetric NormalFloat-3, plain and straight-through.

All quantizers act on groups of ``g`` consecutive input weights of one output row of ``W [N, K]``.

* INT-b asymmetric (b = 2, 3, 4): ``s = max(max - min, eps) / (2^b - 1)``,
  ``z = clamp(-round(min / s), 0, 2^b - 1)``, ``q = clamp(round(W / s) + z, 0, 2^b - 1)``,
  ``W_hat = (q - z) * s``. The no-grad path is the shared kernel (``leanlm.core.kernels.lowbit``,
  round half to even). The STE path rounds with ``rounding`` ("half_even" by default, so training
  sees exactly the weights evaluation and export see; "half_away" is the original training rounding)
  and passes the gradient straight through the rounding; as in the original, gradients also reach
  the scale through the group's max/min.
* NF3 ("n2f3"): separate scales for the two signs, ``s+ = max(|max|, eps)``, ``s- = max(|min|, eps)``;
  ``W+/s+`` and ``W-/s-`` snap to the nearest of the 8 asymmetric NormalFloat levels below (the
  thresholds are the midpoints), ``W_hat = q+ * s+ + q- * s-``. The epsilon is new: the original
  divides 0/0 on a group whose max is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit

EPS = lowbit.EPS
QUANT_TYPES = ("int", "nf3")
ROUNDINGS = ("half_even", "half_away")

# NF3 levels (value for the positive side, value for the negative side) and their decision thresholds
NF3_POS_LEVELS = (0.0, 0.1833375245332718, 0.3819939494132996, 0.6229856610298157, 1.0)
NF3_POS_THRESHOLDS = (0.0916687622666359, 0.2826657369732857, 0.5024898052215576, 0.8114928305149078)
NF3_NEG_LEVELS = (-1.0, -0.5350227355957031, -0.2469314038753510, 0.0)
NF3_NEG_THRESHOLDS = (-0.7675113677978516, -0.39097706973552704, -0.1234657019376755)


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize to: ``quant_type`` int (2/3/4 bits) or nf3 (3 bits), group size along the input dim."""

    quant_type: str = "int"
    bits: int = 2
    group_size: int = 128
    rounding: str = "half_even"

    def __post_init__(self) -> None:
        qt = str(self.quant_type).lower()
        object.__setattr__(self, "quant_type", qt)
        if qt not in QUANT_TYPES:
            raise UserError(f"unknown quant type {self.quant_type!r}; use one of {', '.join(QUANT_TYPES)}")
        for name, value in (("bit width", self.bits), ("group size", self.group_size)):
            if isinstance(value, bool) or not isinstance(value, int):  # typed by the command line's config
                raise UserError(f"{name} must be an integer, got {value!r}")
        bits = self.bits
        if qt == "int" and bits not in lowbit.BITS:
            raise UserError(
                f"int quantization supports {', '.join(map(str, lowbit.BITS))} bits, got {self.bits!r}"
            )
        if qt == "nf3" and bits != 3:
            raise UserError(
                f"nf3 is a 3-bit format; got --w-bit {self.bits!r} (use --quant-type int for 2 or 4 bits)"
            )
        if self.group_size <= 0:
            raise UserError(f"group size must be positive, got {self.group_size!r}")
        if self.rounding not in ROUNDINGS:
            raise UserError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {self.rounding!r}")

    @property
    def name(self) -> str:
        kind = self.quant_type if self.quant_type == "nf3" else f"{self.quant_type}{self.bits}"  # not "nf33"
        return f"{kind}-g{self.group_size}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        return cls(**{k: data[k] for k in ("quant_type", "bits", "group_size", "rounding") if k in data})


# ----------------------------------------------------------------------------- rounding with STE


class _Round(torch.autograd.Function):
    """Round in the forward pass, identity gradient in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, half_away: bool) -> torch.Tensor:  # noqa: ARG004
        if half_away:
            return torch.sign(x) * torch.floor(x.abs() + 0.5)
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return grad, None


def round_ste(x: torch.Tensor, rounding: str = "half_even") -> torch.Tensor:
    return _Round.apply(x, rounding == "half_away")


def _groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    k = w.shape[-1]
    if k % group_size:
        raise UserError(f"group size {group_size} does not divide the input size {k}")
    return w.reshape(-1, k // group_size, group_size)


def clamp_ste(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``clamp(x, low, high)`` whose gradient passes only strictly inside ``(low, high)``.

    Stated here rather than left to ``torch.clamp``, whose gradient at a value equal to a bound
    changed between releases (2.13 passes it, 2.15 does not): QAT must not depend on the version.
    """
    inside = (x > low) & (x < high)
    return torch.where(inside, x, x.detach().clamp(low, high))


def int_asym_ste(
    w: torch.Tensor, bits: int, group_size: int, rounding: str = "half_even", eps: float = EPS
) -> torch.Tensor:
    """Fake-quantized ``w`` (same shape/dtype) with straight-through rounding; computed in fp32."""
    max_int = 2**bits - 1
    g = _groups(w.float(), group_size)
    hi, lo = g.amax(-1, keepdim=True), g.amin(-1, keepdim=True)
    s = (hi - lo).clamp(min=eps) / max_int
    z = torch.clamp(-torch.round(lo / s), 0, max_int).detach()  # integer zero-point: no gradient
    q = clamp_ste(round_ste(g / s, rounding) + z, 0, max_int)
    return ((q - z) * s).reshape(w.shape).to(w.dtype)


def _snap(x: torch.Tensor, thresholds: tuple[float, ...], levels: tuple[float, ...]) -> torch.Tensor:
    """Map each value to ``levels[i]`` where i = number of thresholds it is at or above."""
    idx = torch.zeros_like(x, dtype=torch.long)
    for t in thresholds:
        idx += (x >= t).long()
    return torch.tensor(levels, dtype=x.dtype, device=x.device)[idx]


def nf3_ste(w: torch.Tensor, group_size: int, eps: float = EPS) -> torch.Tensor:
    """Asymmetric NF3 fake quantization with a straight-through estimator on the normalized values."""
    g = _groups(w.float(), group_size)
    s_pos = g.amax(-1, keepdim=True).abs().clamp(min=eps)
    s_neg = g.amin(-1, keepdim=True).abs().clamp(min=eps)
    x_pos = torch.where(g >= 0, g, torch.zeros_like(g)) / s_pos
    x_neg = torch.where(g < 0, g, torch.zeros_like(g)) / s_neg
    q_pos = x_pos + (_snap(x_pos, NF3_POS_THRESHOLDS, NF3_POS_LEVELS) - x_pos).detach()
    q_neg = x_neg + (_snap(x_neg, NF3_NEG_THRESHOLDS, NF3_NEG_LEVELS) - x_neg).detach()
    return (q_pos * s_pos + q_neg * s_neg).reshape(w.shape).to(w.dtype)


def quantize_weight(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Fake-quantized weight: STE when autograd tracks ``w``, the shared kernel otherwise (same values)."""
    if spec.quant_type == "nf3":
        return nf3_ste(w, spec.group_size)
    if torch.is_grad_enabled() and w.requires_grad or spec.rounding != "half_even":
        return int_asym_ste(w, spec.bits, spec.group_size, spec.rounding)
    return lowbit.fake_quantize(w, spec.bits, spec.group_size)
