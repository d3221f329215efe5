"""One linear layer, forward + backward: X [tokens, width] -> Y [tokens, width * expansion], dY random."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leanlm.core.errors import UserError
from leanlm.switchback.benchmark.timing import failure, median_time
from leanlm.switchback.benchmark.torchao_adapter import apply_torchao, torchao_status, unavailable

log = logging.getLogger(__name__)

LAYER_MODES = (
    "linear-fp32",
    "linear-bf16",
    "standard-bf16",
    "switchback-bf16",
    "switchback-fp32",
    "vectorwise-bf16",
    "memeff-bf16",
    "torchao-bf16",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _layer_classes() -> dict[str, type[nn.Module]]:
    """Layer mode prefix -> class (``torchao`` is an ``nn.Linear`` that torchao then quantizes)."""
    from leanlm.switchback.layers import (
        StandardLinear,
        SwitchBackLinear,
        SwitchBackLinearMemEfficient,
        SwitchBackLinearVectorwise,
    )

    return {
        "linear": nn.Linear,
        "standard": StandardLinear,
        "switchback": SwitchBackLinear,
        "vectorwise": SwitchBackLinearVectorwise,
        "memeff": SwitchBackLinearMemEfficient,
        "torchao": nn.Linear,
    }


def make_layer(mode: str, width: int, out: int, device: str = "cpu") -> tuple[nn.Module, torch.dtype]:
    """The layer of ``mode`` (``<kind>-<fp32|bf16>``) with W [out, width], no bias, and its dtype."""
    kind, _, dt = mode.rpartition("-")
    classes = _layer_classes()
    if kind not in classes or dt not in DTYPES:
        raise UserError(f"unknown layer mode {mode!r}; choose from {', '.join(LAYER_MODES)}")
    dtype = DTYPES[dt]
    layer = classes[kind](width, out, bias=False).to(device, dtype)
    if kind == "torchao":  # quantize_ swaps children: the layer needs a parent
        wrapper = nn.Sequential(layer)
        apply_torchao(wrapper, exclude=())
        layer = wrapper
    return layer, dtype


def _layer_step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)

    return step


def layer_step(mode: str, width: int, out: int, tokens: int, device: str) -> Callable[[], None]:
    """One forward+backward of ``mode``'s layer on a random X [tokens, width] with a random dY."""
    torch.manual_seed(0)
    layer, dtype = make_layer(mode, width, out, device)
    x = torch.randn(tokens, width, dtype=dtype, device=device, requires_grad=True)
    g = torch.randn(tokens, out, dtype=dtype, device=device)
    return _layer_step(layer, x, g)


def bench_layers(
    widths: list[int],
    tokens: list[int],
    modes: list[str],
    expansion: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Forward+backward time of one linear layer per (width, tokens, mode)."""
    rows = []
    torchao_missing = torchao_status()
    for width in widths:
        for n in tokens:
            for mode in modes:
                row: dict[str, Any] = {"width": width, "out": width * expansion, "tokens": n, "mode": mode}
                if mode.startswith("torchao") and torchao_missing:
                    rows.append(unavailable(row, torchao_missing))
                    continue
                step = layer_step(mode, width, width * expansion, n, device)
                try:
                    row["ms"] = median_time(step, warmup, repeats, device) * 1e3
                except Exception as e:  # noqa: BLE001 - record the failure, keep benchmarking the rest
                    row.update(failure(e))
                log.info("layer %s", row)
                rows.append(row)
                step = None  # free the layer and tensors before the next (possibly large) shape
                gc.collect()
    return rows
