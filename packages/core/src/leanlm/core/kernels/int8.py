"""Absmax int8 quantization and int8 x int8 -> int32 matmuls with a dequantizing epilogue (SwitchBack).

Every function calls ``use_triton(tensor)`` once and runs either the Triton kernel
(``leanlm.core.kernels.triton_int8``) or the PyTorch reference below; both give the same integers.

Quantization maps a group (a row, a column, or the whole tensor) with absolute maximum ``s`` to
``q = round_half_even(x * (127 / s))`` in [-127, 127], computed in fp32. ``s`` is clamped below by
``EPS`` so an all-zero group gives ``q = 0`` (and dequantizes to 0) instead of NaN. Scales are fp32.

Shapes: ``x`` [M, K]; ``quantize_rowwise`` -> q [M, K], s [M]; ``quantize_columnwise_transpose``
-> q [K, M] (the transpose), s [K]; ``quantize_global(_transpose)`` -> q [M, K] ([K, M]), s [] (a
0-dim tensor). Matmuls take ``a`` [M, K] and ``b`` [K, N] int8 (``b`` may be a transposed view) and
return ``(a @ b) * s_a[:, None] * s_b / 127**2 (+ bias)`` in ``dtype``, where ``s_b`` is [N] (row-wise:
one scale per output column) or a scalar (global).
"""

from __future__ import annotations

import torch

from leanlm.core.kernels.dispatch import use_triton
from leanlm.core.kernels.int8_format import EPS, QMAX

__all__ = [
    "EPS",
    "dequantize_rowwise",
    "int8_matmul_global_dequantize",
    "int8_matmul_rowwise_dequantize",
    "int_mm",
    "quantize_columnwise_transpose",
    "quantize_global",
    "quantize_global_transpose",
    "quantize_rowwise",
]


def _triton():
    from leanlm.core.kernels import triton_int8

    return triton_int8


def _check_2d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{what} must be 2-D, got shape {tuple(x.shape)}")


def _div(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """a / b, correctly rounded on every device.

    PyTorch computes ``127 / t`` as ``t.reciprocal() * 127`` and, on CUDA, ``t / 127`` as
    ``t * (1 / 127)``: both round twice. Dividing two tensors of the same shape is one IEEE division,
    the same as the Triton kernels' ``div_rn``.
    """
    ref = a if isinstance(a, torch.Tensor) else b
    a = a if isinstance(a, torch.Tensor) else torch.full_like(ref, a)
    b = b if isinstance(b, torch.Tensor) else torch.full_like(ref, b)
    return torch.div(a, b)


def _round_to_int8(x: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    # x * (127 / s) in fp32, rounded half to even (torch.round; the Triton kernels use libdevice rint,
    # or add and subtract 1.5 * 2**23 under the interpreter: the same integers for |y| <= 127).
    scale = _div(QMAX, absmax.clamp_min(EPS))
    # Convert, then multiply in place: mixed-dtype elementwise ops take PyTorch's slow casting loop on CPU
    # (bf16 x fp32 [2048, 4096]: 2.6 ms vs 1.9 ms), and a 0-dim scale would not promote x at all.
    y = x * scale if x.dtype == torch.float32 else x.float().mul_(scale)
    return y.round_().clamp_(-QMAX, QMAX).to(torch.int8)


# ------------------------------------------------------------------------------------------ quantize


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q int8 [M, K], s fp32 [M]) with s_m = max_k |x_mk| (>= EPS)."""
    _check_2d(x, "x")
    if use_triton(x):
        return _triton().quantize_rowwise(x)
    absmax = x.abs().amax(dim=1).float().clamp_min(EPS)
    return _round_to_int8(x, absmax[:, None]), absmax


def quantize_columnwise_transpose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q int8 [K, M] = quantized x^T, s fp32 [K]) with one scale per column of x."""
    _check_2d(x, "x")
    if use_triton(x):
        return _triton().quantize_columnwise_transpose(x)
    absmax = x.abs().amax(dim=0).float().clamp_min(EPS)
    return _round_to_int8(x, absmax[None, :]).t().contiguous(), absmax


def _global_absmax(x: torch.Tensor) -> torch.Tensor:
    if x.numel() == 0:
        return torch.full((), EPS, dtype=torch.float32, device=x.device)
    return x.abs().amax().float().clamp_min(EPS)


def quantize_global(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (any shape) -> (q int8 same shape, s fp32 0-dim) with one scale s = max |x| for the tensor."""
    absmax = _global_absmax(x)
    if use_triton(x):
        return _triton().quantize_global(x, absmax)
    return _round_to_int8(x, absmax), absmax


def quantize_global_transpose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q int8 [K, M] = quantized x^T (contiguous), s fp32 0-dim)."""
    _check_2d(x, "x")
    absmax = _global_absmax(x)
    if use_triton(x):
        return _triton().quantize_global_transpose(x, absmax)
    return _round_to_int8(x, absmax).t().contiguous(), absmax


def dequantize_rowwise(
    q: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """q int8 [M, K], s [M] -> q * s[:, None] / 127 in ``dtype``."""
    _check_2d(q, "q")
    if use_triton(q):
        return _triton().dequantize_rowwise(q, absmax, dtype)
    return (q.float() * _div(absmax.float()[:, None], QMAX)).to(dtype)


# ------------------------------------------------------------------------------------------ matmul


def _int_mm_ok(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``torch._int_mm`` accepts these operands.

    CUDA (cuBLASLt) wants m > 16, k >= 16 and k, n multiples of 8 with a row-major ``a``; the CPU
    kernel (torch >= 2.4) takes any 2-D int8 operands, so only the dtype/rank checks apply there.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8 or a.dim() != 2 or b.dim() != 2:
        return False
    if not hasattr(torch, "_int_mm"):
        return False
    m, k = a.shape
    n = b.shape[1]
    if a.is_cuda:
        return m > 16 and k >= 16 and k % 8 == 0 and n % 8 == 0 and a.is_contiguous()
    return True


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 [M, K] @ int8 [K, N] -> int32 [M, N]: ``torch._int_mm`` where it applies, else a fallback."""
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    if _int_mm_ok(a, b):
        # CPU (oneDNN, VNNI): a transposed view of b (the weight as stored) is as fast as a contiguous b
        # (measured ~17 ms either way at 2048^3, 1 thread; about half the bf16 matmul), so b is never copied.
        try:
            return torch._int_mm(a, b)
        except RuntimeError:  # an unsupported layout on some build: fall through to the exact fallback
            pass
    if a.is_cuda:
        # CUDA has no int32 GEMM; fp64 is exact for |sum| < 2**53 (k < 5e11 at |q| <= 127).
        return (a.double() @ b.double()).to(torch.int32)
    return a.to(torch.int32) @ b.to(torch.int32)


def _epilogue(
    acc: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``acc`` int32 [M, N] -> ``acc * s_a[:, None] * s_b / 127^2 (+ bias)`` in ``dtype``; consumes ``acc``.

    fp32, in the same operation order as the Triton epilogue, with ``1/127^2`` folded into ``s_b`` first:
    row-wise ``s_b`` [1, N]: ``(acc * s_a[:, None]) * (s_b * (1/127^2))``; global ``s_b`` []:
    ``acc * (s_a * (s_b * (1/127^2)))[:, None]``; then ``+ bias``. Every [M, N] step is in place and the
    fp32 values overwrite ``acc``'s own storage, so only the cast to a 16-bit ``dtype`` allocates: fresh
    [M, N] buffers (page faults) dominated this epilogue on CPU (2048 x 2048: ~14 ms -> ~1.5 ms).
    """
    sb = scale_b.float() * (1.0 / (QMAX * QMAX))
    if acc.dtype == torch.int32 and acc.is_contiguous():
        out = acc.view(torch.float32)  # same element size: the cast below reads and writes each 4 bytes
        out.copy_(acc)
    else:
        out = acc.float()
    if sb.dim() == 0:
        out.mul_((scale_a.float() * sb)[:, None])
    else:
        out.mul_(scale_a.float()[:, None]).mul_(sb)
    if bias is not None:
        out.add_(bias)  # in fp32 (a 16-bit bias is promoted exactly)
    return out.to(dtype)


def _check_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor) -> None:
    _check_2d(a, "a")
    _check_2d(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    if scale_a.numel() != a.shape[0]:
        raise ValueError(f"scale_a has {scale_a.numel()} entries for {a.shape[0]} rows")


def int8_matmul_rowwise_dequantize(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """a int8 [M, K], b int8 [K, N], s_a [M], s_b [N] -> (a @ b) * s_a[:, None] * s_b[None, :] / 127^2 + bias."""
    _check_mm(a, b, scale_a)
    if scale_b.numel() != b.shape[1]:
        raise ValueError(f"scale_b has {scale_b.numel()} entries for {b.shape[1]} columns")
    if use_triton(a):
        return _triton().int8_matmul_dequantize(a, b, scale_a, scale_b, bias, dtype, rowwise_b=True)
    return _epilogue(int_mm(a, b), scale_a, scale_b.reshape(1, -1), bias, dtype)


def int8_matmul_global_dequantize(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """a int8 [M, K], b int8 [K, N], s_a [M], s_b scalar -> (a @ b) * s_a[:, None] * s_b / 127^2 + bias."""
    _check_mm(a, b, scale_a)
    if scale_b.numel() != 1:
        raise ValueError(f"a global scale_b must have one element, got {scale_b.numel()}")
    if use_triton(a):
        return _triton().int8_matmul_dequantize(a, b, scale_a, scale_b, bias, dtype, rowwise_b=False)
    return _epilogue(int_mm(a, b), scale_a, scale_b.reshape(()), bias, dtype)
