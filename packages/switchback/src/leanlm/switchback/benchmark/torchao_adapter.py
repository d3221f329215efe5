"""torchao's int8 mixed-precision training as a benchmark baseline (an optional import).

torchao's ``Int8MixedPrecisionTrainingConfig(output=True, grad_input=True, grad_weight=False)`` is
the closest thing to SwitchBack: int8 forward and input gradient, grad_weight in bf16.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# the layers SwitchBack keeps in float by default, kept in float for torchao too
TORCHAO_EXCLUDE = ("lm_head", "k_proj", "v_proj")


def torchao_status() -> str | None:
    """None if torchao's int8 mixed-precision training imports, else the reason it does not."""
    try:
        from torchao.prototype.quantized_training import Int8MixedPrecisionTrainingConfig  # noqa: F401
        from torchao.quantization import quantize_  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: not available here
        return f"{type(e).__name__}: {e}"
    return None


def unavailable(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """``row`` marked as not measured because torchao does not import (``reason``)."""
    return {**row, "ms": None, "error": f"torchao unavailable ({reason})"}


def apply_torchao(module: nn.Module, exclude: tuple[str, ...] = TORCHAO_EXCLUDE) -> None:
    """torchao INT8 mixed precision, SwitchBack-like: output and grad_input in int8, grad_weight in bf16."""
    from torchao.prototype.quantized_training import Int8MixedPrecisionTrainingConfig
    from torchao.quantization import quantize_

    config = Int8MixedPrecisionTrainingConfig(output=True, grad_input=True, grad_weight=False)

    def keep(mod: nn.Module, fqn: str) -> bool:
        return isinstance(mod, nn.Linear) and fqn.rsplit(".", 1)[-1] not in exclude

    quantize_(module, config, filter_fn=keep)
