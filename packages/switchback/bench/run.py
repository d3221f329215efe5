"""Layer and training-step benchmark (SwitchBack vs bf16/fp32 nn.Linear, torchao int8 MP if importable).

    uv run --with torchao==0.18.0 python packages/switchback/bench/run.py            # the README's reduced scale
    uv run python packages/switchback/bench/run.py --tokens 2048,8192,16384 --threads 0  # fuller grid, all threads

Writes results.json, results.md and layers.png next to this file (or --output-dir).
"""

from __future__ import annotations

from pathlib import Path

from leanlm.core.cli import run_cli
from leanlm.switchback.benchmark import run_benchmark

HERE = Path(__file__).parent


def main(
    output_dir: str = str(HERE),
    widths: str = "576,1024,2048,4096",
    tokens: str = "2048,8192",
    step_models: str = "default,tinyllama-shapes",
    batch: int = 4,
    seq: int = 256,
    layers: int | None = 4,
    repeats: int = 2,
    threads: int = 1,
) -> str:
    """Reduced-scale defaults: 1 thread (the shared 2-core CPU punishes OpenMP barriers), 4 decoder layers."""
    return run_benchmark(output_dir=output_dir, widths=widths, tokens=tokens, step_models=step_models,
                         batch=batch, seq=seq, layers=layers, repeats=repeats, threads=threads or None)  # fmt: skip


if __name__ == "__main__":
    run_cli(main, "switchback-bench-run")
