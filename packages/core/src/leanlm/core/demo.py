"""The demo contract between core and the method packages.

A method package registers ``<name> = "leanlm.<name>.demo:run_demo"`` under the entry-point group
``leanlm.methods``. ``run_demo(out_dir: Path, model: str = "default") -> DemoResult`` runs the method
end to end at toy scale on CPU, writes what it makes under ``out_dir``, and returns a summary.
``run_demos`` sets torch's thread count for every method (``demo_threads``), so demos need not.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from leanlm.core.records import write_json, write_text

GROUP = "leanlm.methods"


@dataclass
class DemoResult:
    method: str
    ok: bool = True
    seconds: float = 0.0
    summary: str = ""  # a few Markdown lines
    metrics: dict[str, Any] = field(default_factory=dict)


def installed_methods() -> dict[str, Any]:
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


COMPOSE = "compose"  # not a method: the packaged recipe chaining Lion -> BitDistiller -> BiTA
COMPOSE_NEEDS = ("lion", "bitdistiller", "bita")


def run_compose(out_dir: Path, model: str = "default") -> DemoResult:
    """``leanlm demo compose``: the offline distill -> quantize -> accelerate recipe, with its report."""
    from leanlm.core.errors import UserError
    from leanlm.core.recipe import run_recipe

    missing = [m for m in COMPOSE_NEEDS if m not in installed_methods()]
    if missing:
        raise UserError(f"demo compose needs leanlm-{', leanlm-'.join(missing)} installed")
    if model != "default":
        raise UserError("demo compose runs the packaged recipe on the embedded model (no --model)")
    report = run_recipe("distill-quantize-accelerate", out_dir)
    return DemoResult(COMPOSE, summary=report.read_text())


def small_model_threads(current: int) -> int:
    """``current`` if ``OMP_NUM_THREADS`` is set (the user chose), else half the cores, at least 1."""
    return current if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 2) // 2)


@contextlib.contextmanager
def demo_threads() -> Iterator[int]:
    """Torch on half the cores (at least 1) for the demos, unless ``OMP_NUM_THREADS`` is set; restored after.

    The demos run small shapes; with every core's thread in an OpenMP team, each barrier waits for a thread
    another process has descheduled: on a shared 2-core machine 2 threads ran the embedded model 9x slower
    than 1 (54 s vs 6 s for 20 tokens x 6 prompts), and the BitDistiller clip search about 20x slower.
    """
    import torch

    previous = torch.get_num_threads()
    threads = small_model_threads(previous)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def run_demos(out_dir: Path, methods: list[str] | None = None, model: str = "default") -> list[DemoResult]:
    """Run the chosen (default: all installed) method demos, each in ``out_dir/<method>``."""
    available = installed_methods()
    names = methods or list(available)
    results = []
    for name in names:
        t0 = time.time()
        try:
            run = run_compose if name == COMPOSE else available[name].load()
            with demo_threads():
                result = run(out_dir / name, model=model)
        except Exception as e:  # noqa: BLE001 - one failing method must not hide the others
            result = DemoResult(name, ok=False, summary=f"failed: `{type(e).__name__}: {e}`")
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            write_text(out_dir / name / "error.txt", traceback.format_exc())
        result.seconds = time.time() - t0
        results.append(result)
    return results


def write_report(out_dir: Path, results: list[DemoResult]) -> Path:
    lines = ["# leanlm demo report", ""]
    if not results:
        lines.append("No method package is installed, so there is nothing to demonstrate yet.")
    else:
        lines += ["| method | status | seconds |", "|---|---|---|"]
        lines += [f"| {r.method} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.1f} |" for r in results]
        for r in results:
            lines += ["", f"## {r.method}", "", r.summary or "(no summary)"]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    write_json(out_dir / "report.json", [r.__dict__ for r in results])
    return path
