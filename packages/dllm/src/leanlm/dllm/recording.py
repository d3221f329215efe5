"""Routing decisions of forwards that other code runs, collected by a torch forward hook.

``leanlm.core.evaluation.perplexity`` calls the D-LLM itself and reads only ``.logits``. To weigh
the compute of the decisions taken there, ``record_decisions(dllm)`` hooks the module's forward for
the duration of a ``with`` block and keeps, per forward, ``(execs [B, T, L], attention_mask [B, T])``
on the CPU; the mask is all ones when the caller passed none, as the forward then assumes.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def record_decisions(dllm: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``with record_decisions(dllm) as seen: ...``: ``seen`` grows by one pair per forward inside
    the block; the hook is removed on leaving it (also on an error)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    signature = inspect.signature(dllm.forward)

    def keep(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        given = signature.bind(*args, **kwargs).arguments  # the mask may come by position or name
        mask = given.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(given["input_ids"])
        seen.append((output.execs.detach().cpu(), mask.detach().cpu()))

    handle = dllm.register_forward_hook(keep, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()
