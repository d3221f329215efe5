"""Wall-clock timing of a benchmark call, and what a failed call leaves in its result row."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


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


def failure(error: Exception) -> dict[str, Any]:
    """The fields of a row whose timing raised: no time, the error in one short line."""
    return {"ms": None, "error": f"{type(error).__name__}: {error}"[:300]}


def device_name(device: str) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu (x86_64, 1 threads)``, for the results' metadata."""
    if str(device).startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
