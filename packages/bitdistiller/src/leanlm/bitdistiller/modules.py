"""Fake-quantized linear layers and the module swap that puts them into a causal LM.

``QuantLinear`` keeps the latent full-precision ``weight`` (the parameter QAT updates) and
quantizes it on every forward pass: ``y = x @ Q(W)^T + b``. Its state dict is a plain
``nn.Linear``'s, so a checkpoint is an ordinary HF checkpoint of latent weights; the
``quantization_config`` saved beside it (see ``checkpoint``) tells leanlm to re-quantize it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from leanlm.bitdistiller.quant import QuantSpec, quantize_weight
from leanlm.core.errors import UserError
from leanlm.core.swap import find_modules, swap_linears

SKIP_DEFAULT = ("lm_head",)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantized (``spec``) in every forward pass."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, spec: QuantSpec, **kw
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, **kw)
        self.spec = spec

    @classmethod
    def from_linear(cls, linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, spec=spec, device="meta")
        q.weight = linear.weight  # the same Parameter object: optimizers and tied references keep working
        q.bias = linear.bias
        return q

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight()
        return nn.functional.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.spec.name}"


def quantizable_linears(model: nn.Module, skip: Iterable[str] = SKIP_DEFAULT) -> list[tuple[str, nn.Linear]]:
    """(global name, module) of every ``nn.Linear`` that no ``skip`` pattern names (core's one rule:
    fnmatch on the full name or a dotted suffix, so ``lm_head`` is the head, ``*.k_proj`` every k)."""
    return find_modules(model, exclude=tuple(skip))  # type: ignore[return-value]


def check_group_size(model: nn.Module, group_size: int, skip: Iterable[str] = SKIP_DEFAULT) -> None:
    """A UserError naming the first layer whose input size the group size does not divide."""
    for name, m in quantizable_linears(model, skip):
        if m.in_features % group_size:
            divisors = [g for g in (32, 64, 128, 256) if m.in_features % g == 0]
            hint = f"; group sizes that fit: {', '.join(map(str, divisors))}" if divisors else ""
            raise UserError(
                f"group size {group_size} does not divide the input size {m.in_features} of layer {name}{hint}"
            )


def quantize_model(model: nn.Module, spec: QuantSpec, skip: Iterable[str] = SKIP_DEFAULT) -> nn.Module:
    """Swap every linear except ``skip`` (``lm_head``) for a ``QuantLinear``, in place; returns the model.
    Layers that already are ``QuantLinear`` take the new ``spec``."""
    skip = tuple(skip)
    check_group_size(model, spec.group_size, skip)

    def make(m: nn.Module) -> nn.Module:
        if isinstance(m, QuantLinear):
            m.spec = spec
            return m
        return QuantLinear.from_linear(m, spec)

    swap_linears(model, make, exclude=skip)
    return model


def model_spec(model: nn.Module) -> QuantSpec | None:
    """The spec of the model's QuantLinear layers (None if it has none)."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            return m.spec
    return None


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """Replace each QuantLinear by a plain ``nn.Linear`` holding its quantized weight (PTQ/RTN baseline, speed)."""

    def plain(m: nn.Module) -> nn.Linear:
        lin = nn.Linear(m.in_features, m.out_features, m.bias is not None, device="meta")
        lin.weight = nn.Parameter(m.quantized_weight().detach(), requires_grad=False)
        lin.bias = m.bias
        return lin

    swap_linears(model, plain, lambda m, _: isinstance(m, QuantLinear))
    return model
