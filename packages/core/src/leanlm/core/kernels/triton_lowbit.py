"""Triton kernels behind ``leanlm.core.kernels.lowbit`` (import only where triton is usable).

The math and layouts are documented in ``lowbit``; these kernels reproduce the PyTorch reference
bit for bit for quantize/pack/unpack: rounding is half-to-even written out with ``floor`` and the
divisions use ``div_rn`` (Triton's default fp32 division on GPUs is approximate).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _round_half_even(x):
    r = tl.floor(x)
    frac = x - r  # exact in fp32
    r_odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    up = (frac > 0.5) | ((frac == 0.5) & r_odd)
    return tl.where(up, r + 1.0, r)


@triton.jit
def _quantize_kernel(
    w_ptr,
    codes_ptr,
    scales_ptr,
    zeros_ptr,
    n_groups_total,
    group_size,
    max_int,
    eps,
    BLOCK_R: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    # one program quantizes BLOCK_R groups; w is contiguous [n_groups_total, group_size]
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_G)
    row_ok = rows < n_groups_total
    mask = row_ok[:, None] & (cols[None, :] < group_size)
    offs = rows[:, None].to(tl.int64) * group_size + cols[None, :]
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    hi = tl.max(tl.where(mask, w, float("-inf")), axis=1)
    lo = tl.min(tl.where(mask, w, float("inf")), axis=1)
    s = tl.math.div_rn(tl.maximum(hi - lo, eps), max_int)
    z = tl.minimum(tl.maximum(-_round_half_even(tl.math.div_rn(lo, s)), 0.0), max_int)
    q = _round_half_even(tl.math.div_rn(w, s[:, None])) + z[:, None]
    q = tl.minimum(tl.maximum(q, 0.0), max_int)
    tl.store(codes_ptr + offs, q.to(tl.uint8), mask=mask)
    tl.store(scales_ptr + rows, s, mask=row_ok)
    tl.store(zeros_ptr + rows, z.to(tl.uint8), mask=row_ok)


def quantize_asym(
    w: torch.Tensor, bits: int, group_size: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = w.shape[-1]
    flat = w.detach().contiguous().reshape(-1, group_size)
    n_total = flat.shape[0]
    codes = torch.empty(flat.shape, dtype=torch.uint8, device=w.device)
    scales = torch.empty(n_total, dtype=torch.float32, device=w.device)
    zeros = torch.empty(n_total, dtype=torch.uint8, device=w.device)
    block_r = 16
    grid = (triton.cdiv(n_total, block_r),)
    _quantize_kernel[grid](
        flat,
        codes,
        scales,
        zeros,
        n_total,
        group_size,
        float(2**bits - 1),
        float(eps),
        BLOCK_R=block_r,
        BLOCK_G=triton.next_power_of_2(group_size),
    )
    lead = w.shape[:-1]
    return (
        codes.reshape(w.shape),
        scales.reshape(*lead, k // group_size),
        zeros.reshape(*lead, k // group_size),
    )


@triton.jit
def _pack_kernel(codes_ptr, out_ptr, k, n_words, BITS: tl.constexpr, BLOCK_W: tl.constexpr):
    # program (row, word block): each word ORs in every code whose bits overlap it
    row = tl.program_id(0).to(tl.int64)
    words = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    word_ok = words < n_words
    first = (words * 32) // BITS
    acc = tl.zeros((BLOCK_W,), dtype=tl.int64)
    for j in tl.static_range(32 // BITS + 2):
        i = first + j
        pos = i * BITS - words * 32  # bit offset of code i inside this word (may be negative)
        ok = word_ok & (i < k) & (pos < 32) & (pos > -BITS)
        c = tl.load(codes_ptr + row * k + i, mask=ok, other=0).to(tl.int64) & ((1 << BITS) - 1)
        piece = tl.where(pos >= 0, c << tl.maximum(pos, 0), c >> tl.maximum(-pos, 0))
        acc = acc | tl.where(ok, piece, 0)
    acc = acc & 0xFFFFFFFF
    acc = tl.where(acc >= 2147483648, acc - 4294967296, acc)
    tl.store(out_ptr + row * n_words + words, acc.to(tl.int32), mask=word_ok)


def pack(codes: torch.Tensor, bits: int, n_words: int) -> torch.Tensor:
    k = codes.shape[-1]
    flat = codes.contiguous().reshape(-1, k)
    out = torch.empty(flat.shape[0], n_words, dtype=torch.int32, device=codes.device)
    block_w = min(64, triton.next_power_of_2(n_words))
    _pack_kernel[(flat.shape[0], triton.cdiv(n_words, block_w))](
        flat, out, k, n_words, BITS=bits, BLOCK_W=block_w
    )
    return out.reshape(*codes.shape[:-1], n_words)


@triton.jit
def _gather_codes(p_ptr, rows, cols, stride_r, stride_w, mask, BITS: tl.constexpr):
    """Codes at (rows, cols) of a packed matrix: rows broadcast against cols (input positions)."""
    pos = cols * BITS
    word = pos // 32
    off = pos % 32
    base = p_ptr + rows * stride_r
    lo = tl.load(base + word * stride_w, mask=mask, other=0).to(tl.int64) & 0xFFFFFFFF
    straddle = mask & (off + BITS > 32)
    hi = tl.load(base + (word + 1) * stride_w, mask=straddle, other=0).to(tl.int64) & 0xFFFFFFFF
    return ((lo >> off) | (hi << (32 - off))) & ((1 << BITS) - 1)


@triton.jit
def _unpack_kernel(p_ptr, out_ptr, k, n_words, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = cols < k
    codes = _gather_codes(p_ptr, row, cols, n_words, 1, mask, BITS)
    tl.store(out_ptr + row * k + cols, codes.to(tl.uint8), mask=mask)


def unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    n_words = packed.shape[-1]
    flat = packed.contiguous().reshape(-1, n_words)
    out = torch.empty(flat.shape[0], k, dtype=torch.uint8, device=packed.device)
    block_k = min(256, triton.next_power_of_2(k))
    _unpack_kernel[(flat.shape[0], triton.cdiv(k, block_k))](
        flat, out, k, n_words, BITS=bits, BLOCK_K=block_k
    )
    return out.reshape(*packed.shape[:-1], k)


@triton.jit
def _word_codes(
    p_ptr, rn, g, stride_pn, stride_pw, n_ok, BITS: tl.constexpr, WORDS: tl.constexpr, PER: tl.constexpr
):
    """Codes of group ``g`` of rows ``rn`` as [BLOCK_N, WORDS, PER] (2 and 4 bits: no code straddles words).

    One load per packed word, then PER shifts: 16 (2-bit) or 8 (4-bit) times fewer loads than gathering
    each code's word. An arithmetic shift of a negative word fills with sign bits, but only the low BITS
    bits are kept, and those are the code's own.
    """
    w_idx = g * WORDS + tl.arange(0, WORDS)
    words = tl.load(
        p_ptr + rn[:, None].to(tl.int64) * stride_pn + w_idx[None, :] * stride_pw, mask=n_ok[:, None], other=0
    )
    shifts = tl.arange(0, PER) * BITS
    return (words[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1)


def _word_layout(bits: int, group_size: int) -> tuple[int, int]:
    """(WORDS, PER) for the word-at-a-time path, or (0, 1) where codes straddle words or tiles don't fit."""
    if 32 % bits:
        return 0, 1
    per = 32 // bits
    words = group_size // per
    if group_size % per or words & (words - 1):  # tl.arange needs a power of two
        return 0, 1
    return words, per


@triton.jit
def _dequantize_kernel(
    p_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    N,
    K,
    group_size,
    stride_pn,
    stride_pw,
    stride_sn,
    stride_sg,
    stride_zn,
    stride_zg,
    BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
    WORDS: tl.constexpr,
    PER: tl.constexpr,
):
    # one program writes W[rows, group g] = (q - z) * s for BLOCK_N rows and one quantization group
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.program_id(1)
    n_ok = rn < N
    s = tl.load(s_ptr + rn * stride_sn + g * stride_sg, mask=n_ok, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + rn * stride_zn + g * stride_zg, mask=n_ok, other=0).to(tl.float32)
    if WORDS > 0:  # whole words per group: [BLOCK_N, WORDS, PER] codes by shifts
        q = _word_codes(p_ptr, rn, g, stride_pn, stride_pw, n_ok, BITS, WORDS, PER)
        cols = g * group_size + tl.arange(0, WORDS)[:, None] * PER + tl.arange(0, PER)[None, :]
        w = (q.to(tl.float32) - z[:, None, None]) * s[:, None, None]
        tl.store(
            out_ptr + rn[:, None, None].to(tl.int64) * K + cols[None, :, :],
            w.to(out_ptr.dtype.element_ty),
            mask=n_ok[:, None, None],
        )
    else:
        cols = g * group_size + tl.arange(0, BLOCK_G)
        mask = n_ok[:, None] & (tl.arange(0, BLOCK_G) < group_size)[None, :]
        q = _gather_codes(p_ptr, rn[:, None].to(tl.int64), cols[None, :], stride_pn, stride_pw, mask, BITS)
        w = (q.to(tl.float32) - z[:, None]) * s[:, None]
        tl.store(
            out_ptr + rn[:, None].to(tl.int64) * K + cols[None, :], w.to(out_ptr.dtype.element_ty), mask=mask
        )


def dequantize_packed(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    bits: int,
    k: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """W [N, K] in ``dtype`` from packed [N, K*b/32] (any strides), scales/zeros [N, K/g]."""
    n = packed.shape[0]
    out = torch.empty(n, k, dtype=dtype, device=packed.device)
    block_n = 16
    words, per = _word_layout(bits, group_size)
    grid = (triton.cdiv(n, block_n), k // group_size)
    _dequantize_kernel[grid](
        packed,
        scales,
        zeros,
        out,
        n,
        k,
        group_size,
        packed.stride(0),
        packed.stride(1),
        scales.stride(0),
        scales.stride(1),
        zeros.stride(0),
        zeros.stride(1),
        BITS=bits,
        BLOCK_N=block_n,
        BLOCK_G=triton.next_power_of_2(group_size),
        WORDS=words,
        PER=per,
    )
    return out


@triton.jit
def _gemv_kernel(
    x_ptr,
    p_ptr,
    s_ptr,
    z_ptr,
    b_ptr,
    out_ptr,
    N,
    n_groups,
    group_size,
    stride_xm,
    stride_xk,
    stride_pn,
    stride_pw,
    stride_sn,
    stride_sg,
    stride_zn,
    stride_zg,
    stride_om,
    stride_on,
    HAS_BIAS: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr,
    WORDS: tl.constexpr,
    PER: tl.constexpr,
):
    # out[m, n] = sum_g s[n, g] * (sum_{k in g} q[n, k] x[m, k] - z[n, g] * sum_{k in g} x[m, k]):
    # per group one integer-weighted dot and one sum of x, so scale and zero-point apply once per group
    # instead of once per weight. Memory-bound for a few rows of x: it reads the packed weight once.
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    m = tl.program_id(1).to(tl.int64)
    n_ok = rn < N
    in_group = tl.arange(0, BLOCK_G) < group_size
    mask = n_ok[:, None] & in_group[None, :]
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g in range(0, n_groups):
        if WORDS > 0:  # [BLOCK_N, WORDS, PER] codes from whole words, x as [WORDS, PER]
            q = _word_codes(p_ptr, rn, g, stride_pn, stride_pw, n_ok, BITS, WORDS, PER)
            cols = g * group_size + tl.arange(0, WORDS)[:, None] * PER + tl.arange(0, PER)[None, :]
            x = tl.load(x_ptr + m * stride_xm + cols * stride_xk).to(tl.float32)
            dot = tl.sum(tl.sum(q.to(tl.float32) * x[None, :, :], axis=2), axis=1)
            x_sum = tl.sum(tl.sum(x, axis=1), axis=0)
        else:
            cols = g * group_size + tl.arange(0, BLOCK_G)
            x = tl.load(x_ptr + m * stride_xm + cols * stride_xk, mask=in_group, other=0.0).to(tl.float32)
            q = _gather_codes(
                p_ptr, rn[:, None].to(tl.int64), cols[None, :], stride_pn, stride_pw, mask, BITS
            )
            dot = tl.sum(q.to(tl.float32) * x[None, :], axis=1)
            x_sum = tl.sum(x, axis=0)
        s = tl.load(s_ptr + rn * stride_sn + g * stride_sg, mask=n_ok, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + rn * stride_zn + g * stride_zg, mask=n_ok, other=0).to(tl.float32)
        acc += s * (dot - z * x_sum)
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + rn * stride_on, acc.to(out_ptr.dtype.element_ty), mask=n_ok)


# Up to this many rows of x the GEMV kernel reads the packed weight directly; above it, dequantizing
# the weight once and calling cuBLAS wins (every row reuses the dequantized weight). Measured on an
# H100 (packages/core/bench/results/cpu-2core-h100-2026-11-26/results.md), K=4096, N=11008: GEMV 0.13 ms at 1 row but 0.54 ms at 4 rows,
# dequantize + cuBLAS 0.16 ms at 16 rows.
GEMV_MAX_ROWS = 1


def lowbit_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    k = x.shape[-1]
    n = packed.shape[0]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if m > GEMV_MAX_ROWS:
        w = dequantize_packed(packed, scales, zeros, group_size, bits, k, x.dtype)
        out = torch.nn.functional.linear(x2, w, None if bias is None else bias.to(x.dtype))
        return out.reshape(*x.shape[:-1], n)
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_n = 16
    words, per = _word_layout(bits, group_size)
    grid = (triton.cdiv(n, block_n), m)
    _gemv_kernel[grid](
        x2,
        packed,
        scales,
        zeros,
        bias if bias is not None else out,
        out,
        n,
        k // group_size,
        group_size,
        x2.stride(0),
        x2.stride(1),
        packed.stride(0),
        packed.stride(1),
        scales.stride(0),
        scales.stride(1),
        zeros.stride(0),
        zeros.stride(1),
        out.stride(0),
        out.stride(1),
        HAS_BIAS=bias is not None,
        BITS=bits,
        BLOCK_N=block_n,
        BLOCK_G=triton.next_power_of_2(group_size),
        WORDS=words,
        PER=per,
    )
    return out.reshape(*x.shape[:-1], n)
