"""``nn.Linear`` subclasses that train with SwitchBack (see ``functions`` for the math).

* ``SwitchBackLinear``: int8 forward and grad-input, one global weight scale (the default).
* ``SwitchBackLinearVectorwise``: per-channel weight scales.
* ``SwitchBackLinearMemEfficient``: global, keeps int8 activations for the weight gradient.
* ``StandardLinear``: the same structure with every matmul in the input's dtype (the reference).

The float weight stays the master copy that the optimizer updates; it is re-quantized on every
training forward pass. ``prepare_for_eval()`` quantizes it once and (by default) frees it, so
inference only quantizes the activations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.kernels import int8
from leanlm.switchback.functions import (
    StandardFunction,
    SwitchBackGlobalFunction,
    SwitchBackMemEfficientFunction,
    SwitchBackVectorwiseFunction,
)


def _autocast_inputs(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Under autocast, cast like ``nn.Linear`` does: inputs, weight and bias in the autocast dtype.

    Custom autograd functions are not autocast themselves, so without this an fp32 model trained with
    bf16 autocast (HF Trainer's ``--bf16``) would run SwitchBack on fp32 inputs with an fp32 weight
    gradient while every ``nn.Linear`` runs in bf16. The casts are differentiable, so gradients still
    reach the fp32 master weights.
    """
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


class SwitchBackLinear(nn.Linear):
    """A drop-in ``nn.Linear`` whose forward and input-gradient matmuls run in int8.

    ``vectorwise=True`` scales W per channel; ``mem_efficient=True`` saves int8 activations. The two
    options do not combine (as in the original).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        vectorwise: bool = False,
        mem_efficient: bool = False,
    ) -> None:
        if vectorwise and mem_efficient:
            raise UserError("SwitchBackLinear: vectorwise and mem_efficient cannot be combined")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.vectorwise = vectorwise
        self.mem_efficient = mem_efficient
        self.prepared = False

    @property
    def _fn(self) -> type[torch.autograd.Function]:
        if self.vectorwise:
            return SwitchBackVectorwiseFunction
        if self.mem_efficient:
            return SwitchBackMemEfficientFunction
        return SwitchBackGlobalFunction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prepared and not self.training:
            return self._forward_prepared(x)
        if self.weight is None:
            raise RuntimeError(
                "this layer's float weight was freed by prepare_for_eval(); it can only run in eval"
            )
        x, weight, bias = _autocast_inputs(x, self.weight, self.bias)
        return self._fn.apply(x, weight, bias)

    @torch.no_grad()
    def prepare_for_eval(self, free_weight: bool = True) -> None:
        """Quantize W once into buffers ``weight_int8`` [out, in] and ``weight_scale``; free W if asked."""
        quantize = int8.quantize_rowwise if self.vectorwise else int8.quantize_global
        q, s = quantize(self.weight.detach())
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", s)
        self.prepared = True
        if free_weight:
            del self.weight
            self.register_parameter("weight", None)

    def _forward_prepared(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        qx, sx = int8.quantize_rowwise(x2)
        matmul = (
            int8.int8_matmul_rowwise_dequantize if self.vectorwise else int8.int8_matmul_global_dequantize
        )
        out = matmul(qx, self.weight_int8.t(), sx, self.weight_scale, self.bias, dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = (
            "vectorwise" if self.vectorwise else ("global, mem_efficient" if self.mem_efficient else "global")
        )
        return f"{super().extra_repr()}, int8={kind}" + (", prepared" if self.prepared else "")


class SwitchBackLinearVectorwise(SwitchBackLinear):
    """SwitchBack with per-channel weight scales."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ):
        super().__init__(in_features, out_features, bias, device, dtype, vectorwise=True)


class SwitchBackLinearMemEfficient(SwitchBackLinear):
    """Global SwitchBack that keeps int8 activations; dW comes from their dequantized form."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device: Any = None, dtype: Any = None
    ):
        super().__init__(in_features, out_features, bias, device, dtype, mem_efficient=True)


class StandardLinear(nn.Linear):
    """The reference layer: SwitchBack's autograd structure with 16-bit (input dtype) matmuls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return StandardFunction.apply(*_autocast_inputs(x, self.weight, self.bias))


VARIANTS: dict[str, type[nn.Linear]] = {
    "global": SwitchBackLinear,
    "vectorwise": SwitchBackLinearVectorwise,
    "mem_efficient": SwitchBackLinearMemEfficient,
    "standard": StandardLinear,
}
VARIANT_SYNONYMS = {
    "switchback": "global",
    "default": "global",
    "memefficient": "mem_efficient",
    "mem-efficient": "mem_efficient",
    "vector": "vectorwise",
}


def variant_class(variant: str) -> type[nn.Linear]:
    """The layer class for a variant name (global, vectorwise, mem_efficient, standard)."""
    key = VARIANT_SYNONYMS.get(str(variant).lower(), str(variant).lower())
    if key not in VARIANTS:
        raise UserError(f"unknown SwitchBack variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return VARIANTS[key]
