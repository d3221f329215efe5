"""Speed of SwitchBack vs float layers: one linear layer forward+backward, and a whole training step.

Layer modes (X [tokens, width], W [width * expansion, width]):
``linear-fp32``, ``linear-bf16`` (``nn.Linear``), ``standard-bf16`` (the 16-bit reference layer),
``switchback-bf16``/``switchback-fp32`` (global), ``vectorwise-bf16``, ``memeff-bf16``, and
``torchao-bf16`` (torchao's int8 mixed-precision training with grad_weight in bf16, if importable).

Training-step modes (forward, loss, backward, AdamW step): ``fp32``, ``bf16`` (bf16 weights),
``switchback-bf16``, ``switchback-fp32`` and ``torchao-bf16``, on the embedded model or on a random
model with TinyLlama-1.1B's shapes (``tinyllama-shapes``, optionally fewer layers).
Times are medians over ``repeats`` after ``warmup`` calls; on CUDA each call ends with a synchronize.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leanlm.core.errors import UserError

log = logging.getLogger(__name__)

LAYER_MODES = ("linear-fp32", "linear-bf16", "standard-bf16", "switchback-bf16", "switchback-fp32",
               "vectorwise-bf16", "memeff-bf16", "torchao-bf16")  # fmt: skip
STEP_MODES = ("fp32", "bf16", "switchback-bf16", "switchback-fp32", "torchao-bf16")
TORCHAO_EXCLUDE = ("lm_head", "k_proj", "v_proj")


def median_time(fn: Callable[[], Any], warmup: int = 1, repeats: int = 3, device: str = "cpu") -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    On CUDA, kernels run asynchronously: each timed call is closed by a synchronize so the time
    covers the GPU work, not just its launch.
    """
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torchao_status() -> str | None:
    """None if torchao's int8 mixed-precision training imports, else the reason it does not."""
    try:
        from torchao.prototype.quantized_training import Int8MixedPrecisionTrainingConfig  # noqa: F401
        from torchao.quantization import quantize_  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: not available here
        return f"{type(e).__name__}: {e}"
    return None


def apply_torchao(module: nn.Module, exclude: tuple[str, ...] = TORCHAO_EXCLUDE) -> None:
    """torchao INT8 mixed precision, SwitchBack-like: output and grad_input in int8, grad_weight in bf16."""
    from torchao.prototype.quantized_training import Int8MixedPrecisionTrainingConfig
    from torchao.quantization import quantize_

    config = Int8MixedPrecisionTrainingConfig(output=True, grad_input=True, grad_weight=False)

    def keep(mod: nn.Module, fqn: str) -> bool:
        return isinstance(mod, nn.Linear) and fqn.rsplit(".", 1)[-1] not in exclude

    quantize_(module, config, filter_fn=keep)


def _layer(mode: str, width: int, out: int, device: str = "cpu") -> tuple[nn.Module, torch.dtype]:
    from leanlm.switchback.layers import (
        StandardLinear,
        SwitchBackLinear,
        SwitchBackLinearMemEfficient,
        SwitchBackLinearVectorwise,
    )

    kind, _, dt = mode.rpartition("-")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt]
    classes = {"linear": nn.Linear, "standard": StandardLinear, "switchback": SwitchBackLinear,
               "vectorwise": SwitchBackLinearVectorwise, "memeff": SwitchBackLinearMemEfficient,
               "torchao": nn.Linear}  # fmt: skip
    if kind not in classes:
        raise UserError(f"unknown layer mode {mode!r}; choose from {', '.join(LAYER_MODES)}")
    layer = classes[kind](width, out, bias=False).to(device, dtype)
    if kind == "torchao":
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


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, ids: torch.Tensor) -> Callable[[], float]:
    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


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
                    rows.append({**row, "ms": None, "error": f"torchao unavailable ({torchao_missing})"})
                    continue
                torch.manual_seed(0)
                layer, dtype = _layer(mode, width, width * expansion, device)
                x = torch.randn(n, width, dtype=dtype, device=device, requires_grad=True)
                g = torch.randn(n, width * expansion, dtype=dtype, device=device)

                step = _layer_step(layer, x, g)
                try:
                    row["ms"] = median_time(step, warmup, repeats, device) * 1e3
                except Exception as e:  # noqa: BLE001 - record the failure, keep benchmarking the rest
                    row.update(ms=None, error=f"{type(e).__name__}: {e}"[:300])
                log.info("layer %s", row)
                rows.append(row)
                step = layer = x = g = None  # free before the next (possibly large) shape
                gc.collect()
    return rows


def tinyllama_shapes(num_layers: int = 22, vocab_size: int | None = None) -> Any:
    """A random LlamaForCausalLM with TinyLlama-1.1B's shapes (hidden 2048, FFN 5632, 32/4 heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or 32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=num_layers,
        num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _step_model(model_name: str, layers: int | None) -> nn.Module:
    from leanlm.core.models import load_model

    if model_name == "tinyllama-shapes":
        return tinyllama_shapes(num_layers=layers or 22)
    model = load_model(model_name, dtype="fp32", device="cpu")
    if layers:  # keep the first `layers` decoder layers: the same shapes, less time
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    return model


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
    """Median time of a full training step (fwd, loss, bwd, AdamW) per mode; optional loss after N steps."""
    from leanlm.switchback.surgery import swap_linear_layers

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
            rows.append({**row, "ms": None, "error": f"torchao unavailable ({torchao_missing})"})
            continue
        if mode not in STEP_MODES:
            raise UserError(f"unknown step mode {mode!r}; choose from {', '.join(STEP_MODES)}")
        model = _step_model(model_name, layers)
        model.to(device, torch.float32 if mode.endswith("fp32") else torch.bfloat16).train()
        if mode.startswith("switchback"):
            swap_linear_layers(model, "global")
        elif mode.startswith("torchao"):
            apply_torchao(model)
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        step = _train_step(model, opt, ids)
        try:
            row["ms"] = median_time(step, warmup, repeats, device) * 1e3
            row["tokens_per_s"] = batch * seq / (row["ms"] / 1e3)
            for _ in range(steps_for_loss):
                row["loss"] = step()
        except Exception as e:  # noqa: BLE001
            row.update(ms=None, error=f"{type(e).__name__}: {e}"[:300])
        log.info("step %s", row)
        rows.append(row)
        step = model = opt = None
        gc.collect()
    return rows


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "n/a"


def layer_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (width, tokens), one column per mode (ms), speed-ups vs bf16 and fp32 nn.Linear."""
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    keys = list(dict.fromkeys((r["width"], r["out"], r["tokens"]) for r in rows))
    fast = [m for m in modes if not m.startswith("linear")]
    head = ["width", "out", "tokens", *[f"{m} ms" for m in modes]]
    head += [f"{m} vs bf16" for m in fast] + [f"{m} vs fp32" for m in fast if m.startswith("switchback")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w, o, n in keys:
        cell = {r["mode"]: r.get("ms") for r in rows if (r["width"], r["out"], r["tokens"]) == (w, o, n)}
        vals = [f"{cell[m]:.1f}" if cell.get(m) else "n/a" for m in modes]
        vals += [_ratio(cell.get("linear-bf16"), cell.get(m)) for m in fast]
        vals += [_ratio(cell.get("linear-fp32"), cell.get(m)) for m in fast if m.startswith("switchback")]
        lines.append("| " + " | ".join([str(w), str(o), str(n), *vals]) + " |")
    return "\n".join(lines)


def step_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | layers | batch x seq | mode | step ms | tokens/s | vs bf16 | vs fp32 | loss | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    by = {(r["model"], r["mode"]): r for r in rows}
    for r in rows:
        bf16 = by.get((r["model"], "bf16"), {}).get("ms")
        fp32 = by.get((r["model"], "fp32"), {}).get("ms")
        ms = r.get("ms")
        ms_s = f"{ms:.0f}" if ms else "n/a"
        tps = f"{r['tokens_per_s']:.0f}" if ms else "n/a"
        loss = f"{r['loss']:.4f}" if "loss" in r else ""
        lines.append(
            f"| {r['model']} | {r.get('layers') or 'all'} | {r['batch']}x{r['seq']} | {r['mode']} | {ms_s} | "
            f"{tps} | {_ratio(bf16, ms)} | {_ratio(fp32, ms)} | {loss} | {r.get('error', '')} |"
        )
    return "\n".join(lines)


def plot_layers(rows: list[dict[str, Any]], path: Any) -> None:
    """PNG: speed-up over bf16 nn.Linear vs width, one line per (mode, tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    base = {(r["width"], r["tokens"]): r.get("ms") for r in rows if r["mode"] == "linear-bf16"}
    token_counts = sorted({r["tokens"] for r in rows})
    styles = ["-", "--", ":", "-."]
    modes = [m for m in dict.fromkeys(r["mode"] for r in rows) if m != "linear-bf16"]
    for i, mode in enumerate(modes):  # one colour per mode, one line style per token count
        for j, n in enumerate(token_counts):
            pts = [(r["width"], base[(r["width"], n)] / r["ms"]) for r in rows
                   if r["mode"] == mode and r["tokens"] == n and r.get("ms") and base.get((r["width"], n))]  # fmt: skip
            if pts:
                ax.plot(*zip(*sorted(pts)), marker="o", color=f"C{i % 10}", ls=styles[j % len(styles)],
                        label=f"{mode}, {n} tokens")  # fmt: skip
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layer width")
    ax.set_ylabel("speed-up over bf16 nn.Linear (fwd+bwd)")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    import platform

    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _ints(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    return [int(v) for v in value]


def _names(value: Any) -> list[str]:
    return (
        [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str)
        else [str(v) for v in value]
    )


def run_benchmark(
    output_dir: str = "switchback-bench",
    widths: str = "576,1024,2048,4096",
    tokens: str = "2048,8192,16384",
    modes: str = ",".join(LAYER_MODES),
    expansion: int = 1,
    step_models: str = "default,tinyllama-shapes",
    step_modes: str = ",".join(STEP_MODES),
    batch: int = 4,
    seq: int = 512,
    layers: int | None = None,
    loss_steps: int = 0,
    warmup: int = 1,
    repeats: int = 3,
    threads: int | None = None,
    device: str = "cpu",
) -> str:
    """Layer fwd+bwd and training-step timings; writes results.json, results.md and layers.png.

    Args:
        output_dir: where the results go.
        widths: comma-separated layer widths (input features).
        tokens: comma-separated token counts (rows of X).
        modes: layer modes: linear-fp32, linear-bf16, standard-bf16, switchback-bf16, switchback-fp32,
            vectorwise-bf16, memeff-bf16, torchao-bf16.
        expansion: output features = width * expansion.
        step_models: models for the training-step benchmark ("" to skip): default, tinyllama-shapes, a path.
        step_modes: fp32, bf16, switchback-bf16, switchback-fp32, torchao-bf16.
        batch, seq: training-step batch size and sequence length.
        layers: keep only this many decoder layers in the step models (same shapes, less time).
        loss_steps: after timing, train this many more steps and report the loss (a sanity check).
        warmup, repeats: timing: median of REPEATS calls after WARMUP calls.
        threads: torch threads (default: torch's choice).
        device: cpu or cuda (on CUDA the int8 layers run the Triton kernels).
    """
    from pathlib import Path

    from leanlm.core.records import write_json, write_text

    if threads:
        torch.set_num_threads(int(threads))
    if not str(device).startswith("cuda"):
        from leanlm.core.cpu_memory import keep_freed_memory

        keep_freed_memory()  # for every mode alike: large CPU buffers are reused, not page-faulted in again
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    layer_rows = bench_layers(
        _ints(widths), _ints(tokens), _names(modes), int(expansion), int(warmup), int(repeats), device
    )
    step_rows: list[dict[str, Any]] = []
    for name in _names(step_models) if step_models else []:
        step_rows += bench_train_step(name, _names(step_modes), int(batch), int(seq), layers, int(warmup),
                                      int(repeats), int(loss_steps), device)  # fmt: skip
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0,
            "torchao": torchao_status() or "available", "device": _device_name(device)}  # fmt: skip
    write_json(out / "results.json", {"meta": meta, "layers": layer_rows, "train_step": step_rows})
    md = ["# SwitchBack benchmark", "", f"torch {meta['torch']}, {meta['threads']} threads, torchao: {meta['torchao']}",
          f"device: {meta['device']}", "", "## One linear layer, forward + backward (median ms)", "",
          layer_table(layer_rows)]  # fmt: skip
    if step_rows:
        md += ["", "## Training step (forward, loss, backward, AdamW; median ms)", "", step_table(step_rows)]
    text = "\n".join(md) + "\n"
    write_text(out / "results.md", text)
    if any(r.get("ms") for r in layer_rows if r["mode"] == "linear-bf16"):
        plot_layers(layer_rows, out / "layers.png")
    return text
