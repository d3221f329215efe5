"""Choose between the Triton kernels and the PyTorch fallback.

``LEANLM_KERNELS`` = ``auto`` (default: Triton for CUDA tensors when triton imports, PyTorch
otherwise), ``triton`` (always Triton; on CPU this needs ``TRITON_INTERPRET=1``), or ``torch``.
Each public kernel calls ``use_triton(tensor)`` once and runs one of its two implementations.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("auto", "triton", "torch")


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken triton install means: use PyTorch
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_backend() -> str:
    choice = os.environ.get("LEANLM_KERNELS", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"LEANLM_KERNELS={choice!r}; use one of {', '.join(BACKENDS)}")
    return choice


def use_triton(tensor: torch.Tensor) -> bool:
    """True when this call should run the Triton kernel for ``tensor``."""
    choice = kernel_backend()
    if choice == "torch" or not triton_available():
        return False
    if choice == "triton":
        return tensor.is_cuda or interpreting()
    return tensor.is_cuda
