"""switchback-bench: the layer and training-step benchmarks from one typed config; results on disk.

Writes ``results.json`` (``{"meta", "layers": [row...], "train_step": [row...]}``), ``results.md``
and, when bf16 ``nn.Linear`` was timed, ``layers.png`` into ``output_dir``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leanlm.core.config_cli import flag
from leanlm.core.errors import UserError
from leanlm.switchback.benchmark.layer_bench import LAYER_MODES, bench_layers
from leanlm.switchback.benchmark.step_bench import STEP_MODES, bench_train_step
from leanlm.switchback.benchmark.timing import device_name
from leanlm.switchback.benchmark.torchao_adapter import torchao_status


@dataclass(frozen=True)
class BenchOptions:
    """What switchback-bench measures; lists are comma-separated strings, as on the command line."""

    output_dir: str = flag("switchback-bench", "where the results go.")
    widths: str = flag("576,1024,2048,4096", "comma-separated layer widths (input features).")
    tokens: str = flag("2048,8192,16384", "comma-separated token counts (rows of X).")
    modes: str = flag(",".join(LAYER_MODES), "layer modes: " + ", ".join(LAYER_MODES) + ".")
    expansion: int = flag(1, "output features = width * expansion.")
    step_models: str = flag(
        "default,tinyllama-shapes",
        'models for the training-step benchmark ("" to skip): default, tinyllama-shapes, a path.',
    )
    step_modes: str = flag(",".join(STEP_MODES), ", ".join(STEP_MODES) + ".")
    batch: int = flag(4, "training-step batch size.")
    seq: int = flag(512, "training-step sequence length.")
    layers: int | None = flag(
        None, "keep only this many decoder layers in the step models (same shapes, less time)."
    )
    loss_steps: int = flag(
        0, "after timing, train this many more steps and report the loss (a sanity check)."
    )
    warmup: int = flag(1, "timing: median of REPEATS calls after WARMUP calls.")
    repeats: int = flag(3, "timed calls per measurement.")
    threads: int | None = flag(None, "torch threads (default: torch's choice).")
    device: str = flag("cpu", "cpu or cuda (on CUDA the int8 layers run the Triton kernels).")


def split_names(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in value.split(",") if v.strip()]


def split_ints(value: str, name: str) -> list[int]:
    """``"576,1024"`` -> ``[576, 1024]``; a UserError naming ``--name`` for anything else."""
    try:
        return [int(v) for v in split_names(value)]
    except ValueError:
        raise UserError(f"--{name} must be comma-separated integers, got {value!r}") from None


def _prepare_process(config: BenchOptions) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    if not config.device.startswith("cuda"):
        from leanlm.core.cpu_memory import keep_freed_memory

        keep_freed_memory()  # for every mode alike: large CPU buffers are reused, not page-faulted in again


def _step_rows(config: BenchOptions) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in split_names(config.step_models):
        rows += bench_train_step(
            name,
            split_names(config.step_modes),
            config.batch,
            config.seq,
            config.layers,
            config.warmup,
            config.repeats,
            config.loss_steps,
            config.device,
        )
    return rows


def run_benchmark(config: BenchOptions) -> str:
    """Layer fwd+bwd and training-step timings; writes results.json, results.md and layers.png."""
    from leanlm.core.records import write_json, write_text
    from leanlm.switchback.benchmark.plot import plot_layers
    from leanlm.switchback.benchmark.tables import results_markdown

    widths, tokens = split_ints(config.widths, "widths"), split_ints(config.tokens, "tokens")
    _prepare_process(config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    layer_rows = bench_layers(
        widths,
        tokens,
        split_names(config.modes),
        config.expansion,
        config.warmup,
        config.repeats,
        config.device,
    )
    step_rows = _step_rows(config)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - t0,
        "torchao": torchao_status() or "available",
        "device": device_name(config.device),
    }
    write_json(out / "results.json", {"meta": meta, "layers": layer_rows, "train_step": step_rows})
    text = results_markdown(meta, layer_rows, step_rows)
    write_text(out / "results.md", text)
    if any(r.get("ms") for r in layer_rows if r["mode"] == "linear-bf16"):
        plot_layers(layer_rows, out / "layers.png")
    return text
