"""A whole training step (forward, loss, backward, AdamW) of a causal LM per precision mode."""

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

STEP_MODES = ("fp32", "bf16", "switchback-bf16", "switchback-fp32", "torchao-bf16")


def tinyllama_shapes(num_layers: int = 22, vocab_size: int | None = None) -> Any:
    """A random LlamaForCausalLM with TinyLlama-1.1B's shapes (hidden 2048, FFN 5632, 32/4 heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or 32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=num_layers,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def step_model(model_name: str, layers: int | None) -> nn.Module:
    """``tinyllama-shapes`` or a loadable model (fp32, CPU), cut to its first ``layers`` decoder layers."""
    from leanlm.core.models import load_model

    if model_name == "tinyllama-shapes":
        return tinyllama_shapes(num_layers=layers or 22)
    model = load_model(model_name, dtype="fp32", device="cpu")
    if layers:  # keep the first `layers` decoder layers: the same shapes, less time
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    return model


def prepare_model(model: nn.Module, mode: str, device: str) -> nn.Module:
    """``model`` moved to ``device`` in ``mode``'s dtype, in train mode, its linears swapped for ``mode``."""
    from leanlm.switchback.surgery import swap_linear_layers

    model.to(device, torch.float32 if mode.endswith("fp32") else torch.bfloat16).train()
    if mode.startswith("switchback"):
        swap_linear_layers(model, "global")
    elif mode.startswith("torchao"):
        apply_torchao(model)
    return model


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def bench_train_step(
    model_name: str = "default",
    modes: list[str] | None = None,
    batch: int = 4,
    seq: int = 256,
    layers: int | None = None,
    warmup: int = 1,
    repeats: int = 3,
    steps_for_loss: int = 0,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Median time of a full training step (fwd, loss, bwd, AdamW) per mode; optional loss after N steps.

    Input ids [batch, seq] are random (seeded once, so every mode sees the same batch); the labels
    are the inputs, so the loss is the model's own next-token loss on noise.
    """
    rows = []
    torchao_missing = torchao_status()
    g = torch.Generator().manual_seed(0)
    for mode in modes or list(STEP_MODES):
        row: dict[str, Any] = {
            "model": model_name,
            "mode": mode,
            "batch": batch,
            "seq": seq,
            "layers": layers,
        }
        if mode.startswith("torchao") and torchao_missing:
            rows.append(unavailable(row, torchao_missing))
            continue
        if mode not in STEP_MODES:
            raise UserError(f"unknown step mode {mode!r}; choose from {', '.join(STEP_MODES)}")
        model = prepare_model(step_model(model_name, layers), mode, device)
        ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)
        step = _train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-5), ids)
        try:
            row["ms"] = median_time(step, warmup, repeats, device) * 1e3
            row["tokens_per_s"] = batch * seq / (row["ms"] / 1e3)
            for _ in range(steps_for_loss):
                row["loss"] = step()
        except Exception as e:  # noqa: BLE001 - record the failure, keep benchmarking the rest
            row.update(failure(e))
        log.info("step %s", row)
        rows.append(row)
        step = model = None  # free the model and its optimizer before the next mode
        gc.collect()
    return rows
