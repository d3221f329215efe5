"""Layer and training-step benchmark (SwitchBack vs bf16/fp32 nn.Linear, torchao int8 MP if importable).

    uv run --with torchao==0.18.0 python packages/switchback/bench/run.py            # the README's reduced scale
    uv run python packages/switchback/bench/run.py --tokens 2048,8192,16384 --threads 0  # fuller grid, all threads
    python packages/switchback/bench/run.py --device cuda --label cuda \
        --tokens 2048,8192,16384 --step-models tinyllama-shapes --layers 0 --batch 8 --seq 1024 --repeats 10

Writes results.json, results.md and layers.png to bench/results/<label>/ (--label, default cpu; or --output-dir).
"""

from __future__ import annotations

from pathlib import Path

from leanlm.core.console import run_cli
from leanlm.switchback.benchmark import LAYER_MODES, BenchOptions, run_benchmark

HERE = Path(__file__).parent


def main(
    label: str = "cpu",
    output_dir: str = "",
    widths: str = "576,1024,2048,4096",
    tokens: str = "2048,8192",
    step_models: str = "default,tinyllama-shapes",
    batch: int = 4,
    seq: int = 256,
    layers: int | None = 4,
    repeats: int = 2,
    warmup: int = 1,
    threads: int = 1,
    device: str = "cpu",
    modes: str = ",".join(LAYER_MODES),
    loss_steps: int = 0,
) -> str:
    """Reduced-scale defaults: 1 thread (the shared 2-core CPU punishes OpenMP barriers), 4 decoder layers.

    ``--layers 0`` keeps every decoder layer; ``--device cuda`` runs on the GPU (Triton int8 kernels).
    """
    output_dir = output_dir or str(HERE / "results" / label)
    config = BenchOptions(
        output_dir=output_dir,
        widths=widths,
        tokens=tokens,
        step_models=step_models,
        batch=batch,
        seq=seq,
        layers=layers or None,
        repeats=repeats,
        warmup=warmup,
        threads=threads or None,
        device=device,
        modes=modes,
        loss_steps=loss_steps,
    )
    return run_benchmark(config)


if __name__ == "__main__":
    run_cli(main, "switchback-bench-run")
