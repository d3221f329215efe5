"""Triton kernels behind ``leanlm.core.kernels.int8`` (CUDA, or CPU under ``TRITON_INTERPRET=1``).

Written against the Triton 3.x API (``triton.language.extra.libdevice.rint`` when compiled; no ``tl.libdevice`` and
no ``triton.ops``, whose removal broke the bitsandbytes SwitchBack kernels). The arithmetic matches
the PyTorch reference operation for operation, so quantized integers are identical:
``q = rint(x_fp32 * (127 / max(s, EPS)))`` (the division correctly rounded, ``div_rn``), clamped to [-127, 127]; matmul epilogue
``acc_fp32 * s_a * (s_b * (1 / 127^2)) + bias`` (global ``s_b``: ``acc_fp32 * (s_a * (s_b * (1 / 127^2)))
+ bias``). Call these through ``leanlm.core.kernels.int8``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from leanlm.core.kernels.dispatch import interpreting
from leanlm.core.kernels.int8_format import EPS, QMAX

# decided once: the interpreter is chosen when triton is imported, like TRITON_INTERPRET itself
_LIBDEVICE = not interpreting()

_TORCH_TO_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


# ------------------------------------------------------------------------------------------ kernels


@triton.jit
def _rint(y, LIBDEVICE: tl.constexpr):
    # Compiled: libdevice's rint (round half to even, like torch.round). The interpreter does not
    # implement libdevice calls, so there adding and subtracting 1.5 * 2**23 rounds instead: exact
    # round-half-even for fp32 |y| < 2**22 (ours is <= 127.5). Not used compiled, where FMA
    # contraction of the preceding multiply could change the rounding.
    if LIBDEVICE:
        r = libdevice.rint(y)
    else:
        r = (y + 12582912.0) - 12582912.0
    return r


@triton.jit
def _quantize_rowwise_kernel(
    x_ptr, q_ptr, s_ptr, K, stride_xm, stride_xk, eps, BLOCK_K: tl.constexpr, LIBDEVICE: tl.constexpr
):
    # one program per row: pass 1 finds max |x|, pass 2 writes the rounded int8 values
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_K)
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        x = tl.load(x_ptr + row * stride_xm + k * stride_xk, mask=k < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    s = tl.maximum(tl.max(amax, axis=0), eps)
    scale = tl.math.div_rn(127.0, s)  # correctly rounded: '/' is approximate on GPUs
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        x = tl.load(x_ptr + row * stride_xm + k * stride_xk, mask=k < K, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(_rint(x * scale, LIBDEVICE), -127.0), 127.0)
        tl.store(q_ptr + row * K + k, q.to(tl.int8), mask=k < K)
    tl.store(s_ptr + row, s)


@triton.jit
def _quantize_columnwise_t_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    M,
    K,
    stride_xm,
    stride_xk,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    LIBDEVICE: tl.constexpr,
):
    # one program per block of columns; output q is x^T: q[k, m] at q_ptr + k * M + m
    pid = tl.program_id(0)
    cols = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    rows = tl.arange(0, BLOCK_M)
    amax = tl.zeros([BLOCK_K], dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        r = m0 + rows
        mask = (r[:, None] < M) & (cols[None, :] < K)
        x = tl.load(x_ptr + r[:, None] * stride_xm + cols[None, :] * stride_xk, mask=mask, other=0.0)
        amax = tl.maximum(amax, tl.max(tl.abs(x.to(tl.float32)), axis=0))
    s = tl.maximum(amax, eps)
    scale = tl.math.div_rn(127.0, s)  # correctly rounded: '/' is approximate on GPUs
    for m0 in range(0, M, BLOCK_M):
        r = m0 + rows
        mask = (r[:, None] < M) & (cols[None, :] < K)
        x = tl.load(x_ptr + r[:, None] * stride_xm + cols[None, :] * stride_xk, mask=mask, other=0.0)
        q = _rint(x.to(tl.float32) * scale[None, :], LIBDEVICE)
        q = tl.minimum(tl.maximum(q, -127.0), 127.0)
        tl.store(q_ptr + cols[None, :] * M + r[:, None], q.to(tl.int8), mask=mask)
    tl.store(s_ptr + cols, s, mask=cols < K)


@triton.jit
def _quantize_global_kernel(x_ptr, q_ptr, s_ptr, n, BLOCK: tl.constexpr, LIBDEVICE: tl.constexpr):
    # x is contiguous and flattened; s_ptr holds the (already clamped) global absmax
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    scale = tl.math.div_rn(127.0, tl.load(s_ptr))
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    q = tl.minimum(tl.maximum(_rint(x * scale, LIBDEVICE), -127.0), 127.0)
    tl.store(q_ptr + offs, q.to(tl.int8), mask=offs < n)


@triton.jit
def _quantize_global_t_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    M,
    K,
    stride_xm,
    stride_xk,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    LIBDEVICE: tl.constexpr,
):
    # 2-D tiles; writes q = quantized x^T, q[k, m] at q_ptr + k * M + m
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    scale = tl.math.div_rn(127.0, tl.load(s_ptr))
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xk, mask=mask, other=0.0)
    q = tl.minimum(tl.maximum(_rint(x.to(tl.float32) * scale, LIBDEVICE), -127.0), 127.0)
    tl.store(q_ptr + cols[None, :] * M + rows[:, None], q.to(tl.int8), mask=mask)


@triton.jit
def _dequantize_rowwise_kernel(q_ptr, s_ptr, out_ptr, K, stride_qm, stride_qk, BLOCK_K: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_K)
    factor = tl.math.div_rn(tl.load(s_ptr + row), 127.0)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs
        q = tl.load(q_ptr + row * stride_qm + k * stride_qk, mask=k < K, other=0)
        out = q.to(tl.float32) * factor
        tl.store(out_ptr + row * K + k, out.to(out_ptr.dtype.element_ty), mask=k < K)


@triton.jit
def _int8_matmul_dequantize_kernel(
    a_ptr,
    b_ptr,
    sa_ptr,
    sb_ptr,
    bias_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    ROWWISE_B: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # grouped program order so consecutive programs reuse the same rows of `a` (L2 friendliness)
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n
    group_id = pid // width
    group_size = tl.minimum(grid_m - group_id * GROUP_M, GROUP_M)
    pid_m = group_id * GROUP_M + (pid % group_size)
    pid_n = (pid % width) // group_size

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + rk
        a = tl.load(
            a_ptr + rm[:, None] * stride_am + k[None, :] * stride_ak,
            mask=(rm[:, None] < M) & (k[None, :] < K),
            other=0,
        )
        b = tl.load(
            b_ptr + k[:, None] * stride_bk + rn[None, :] * stride_bn,
            mask=(k[:, None] < K) & (rn[None, :] < N),
            other=0,
        )
        acc += tl.dot(a, b, out_dtype=tl.int32)

    # the PyTorch epilogue's fp32 order: 1/127^2 folded into s_b, then one or two multiplies per element
    sa = tl.load(sa_ptr + rm, mask=rm < M, other=0.0)
    if ROWWISE_B:
        sb = tl.load(sb_ptr + rn, mask=rn < N, other=0.0) * (1.0 / (127.0 * 127.0))
        out = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    else:
        sb = tl.load(sb_ptr) * (1.0 / (127.0 * 127.0))
        out = acc.to(tl.float32) * (sa * sb)[:, None]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
        out = out + bias[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(
        c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn, out.to(c_ptr.dtype.element_ty), mask=mask
    )


# ------------------------------------------------------------------------------------------ launchers

assert QMAX == 127.0  # the kernels hard-code 127


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.int8, device=x.device)
    s = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M and K:
        block = _pow2(K, 16, 4096)
        _quantize_rowwise_kernel[(M,)](
            x, q, s, K, x.stride(0), x.stride(1), EPS, BLOCK_K=block, LIBDEVICE=_LIBDEVICE
        )
    else:
        s.fill_(EPS)
    return q, s


def quantize_columnwise_transpose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    M, K = x.shape
    q = torch.empty((K, M), dtype=torch.int8, device=x.device)
    s = torch.empty((K,), dtype=torch.float32, device=x.device)
    if M and K:
        bm, bk = _pow2(M, 16, 64), _pow2(K, 16, 64)
        grid = (triton.cdiv(K, bk),)
        _quantize_columnwise_t_kernel[grid](
            x, q, s, M, K, x.stride(0), x.stride(1), EPS, BLOCK_M=bm, BLOCK_K=bk, LIBDEVICE=_LIBDEVICE
        )
    else:
        s.fill_(EPS)
    return q, s


def quantize_global(x: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.contiguous().reshape(-1)
    q = torch.empty(flat.shape, dtype=torch.int8, device=x.device)
    n = flat.numel()
    if n:
        block = _pow2(n, 16, 1024)
        _quantize_global_kernel[(triton.cdiv(n, block),)](
            flat, q, absmax.reshape(1), n, BLOCK=block, LIBDEVICE=_LIBDEVICE
        )
    return q.reshape(x.shape), absmax


def quantize_global_transpose(x: torch.Tensor, absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    M, K = x.shape
    q = torch.empty((K, M), dtype=torch.int8, device=x.device)
    if M and K:
        bm, bk = _pow2(M, 16, 64), _pow2(K, 16, 64)
        grid = (triton.cdiv(M, bm), triton.cdiv(K, bk))
        _quantize_global_t_kernel[grid](
            x,
            q,
            absmax.reshape(1),
            M,
            K,
            x.stride(0),
            x.stride(1),
            BLOCK_M=bm,
            BLOCK_K=bk,
            LIBDEVICE=_LIBDEVICE,
        )
    return q, absmax


def dequantize_rowwise(q: torch.Tensor, absmax: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    M, K = q.shape
    out = torch.empty((M, K), dtype=dtype, device=q.device)
    if M and K:
        s = absmax.float().contiguous()
        _dequantize_rowwise_kernel[(M,)](q, s, out, K, q.stride(0), q.stride(1), BLOCK_K=_pow2(K, 16, 4096))
    return out


def _matmul_blocks(M: int, N: int, K: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for an [M, K] x [K, N] int8 product.

    tl.dot needs every block dim >= 16 (int8 MMA: K >= 32); big tiles only pay off on big problems.
    Big problems get 128 x 128 x 128 tiles, 3-stage pipelined (3 x 32 KiB of shared memory: fits
    every GPU with int8 tensor cores).
    """
    if M >= 256 and N >= 256 and K >= 256:
        return 128, 128, 128, 8, 3
    bm = _pow2(M, 16, 128)
    bn = _pow2(N, 16, 128)
    bk = _pow2(K, 32, 64)
    warps = 8 if bm * bn >= 128 * 128 else 4
    return bm, bn, bk, warps, 2


def int8_matmul_dequantize(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
    *,
    rowwise_b: bool,
) -> torch.Tensor:
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), dtype=dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    if K == 0:
        c.zero_()
        return c if bias is None else (c + bias.to(dtype))
    sa = scale_a.float().contiguous()
    sb = scale_b.float().contiguous().reshape(-1)
    bias_arg = bias.contiguous() if bias is not None else sa  # any valid pointer when HAS_BIAS is False
    bm, bn, bk, warps, stages = _matmul_blocks(M, N, K)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _int8_matmul_dequantize_kernel[grid](
        a,
        b,
        sa,
        sb,
        bias_arg,
        c,
        M,
        N,
        K,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        c.stride(0),
        c.stride(1),
        ROWWISE_B=rowwise_b,
        HAS_BIAS=bias is not None,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        GROUP_M=8,
        num_warps=warps,
        num_stages=stages,
    )
    return c
