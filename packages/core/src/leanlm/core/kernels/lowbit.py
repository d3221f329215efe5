"""Low-bit weight kernels: asymmetric b-bit group quantize, int32 bit packing, dequantize-matmul.

Shapes and math (``W`` is ``[N, K]``, groups of ``g`` consecutive input weights of one output row):

* ``quantize_asym(W, bits, g)``: per group ``s = max(max - min, eps) / (2^b - 1)``,
  ``z = clamp(-round(min / s), 0, 2^b - 1)``, ``q = clamp(round(W / s) + z, 0, 2^b - 1)``, with
  round-half-to-even (``torch.round``) and exact IEEE fp32 division. Returns codes ``uint8 [N, K]``,
  scales ``fp32 [N, K/g]``, zero-points ``uint8 [N, K/g]``. The epsilon makes a constant group give
  finite scales (an all-zero group dequantizes to zeros).
* ``dequantize(q, s, z, g)``: ``(q - z) * s``.
* ``pack(q, bits)``: the codes of each row as one little-endian bit stream cut into int32 words:
  code ``i`` occupies stream bits ``[b*i, b*i + b)``. For b = 2 and 4 that is 16 or 8 codes per
  word in natural order; for b = 3 codes straddle words (32 codes per 3 words), the GPTQ layout.
  ``[..., K] -> int32 [..., K*b/32]``; ``K*b`` must be a multiple of 32.
* ``unpack(packed, bits, K)``: the inverse.
* ``lowbit_matmul(x, packed, s, z, bits, g, bias)``: ``x @ dequantize(unpack(packed))^T + bias`` for
  ``x [..., K]``, ``packed [N, K*b/32]`` (any strides: a transposed GPTQ ``qweight`` view works),
  scales/zeros ``[N, K/g]`` (any strides); the output has ``x``'s dtype. On the Triton path up to
  ``triton_lowbit.GEMV_MAX_ROWS`` rows of ``x`` (decoding) run a GEMV kernel that reads the packed
  weight directly; more rows dequantize the weight once (one kernel) and call cuBLAS.

Each public function picks the Triton kernel (``triton_lowbit``) or the PyTorch code here through
``use_triton``; both give bit-identical codes and packing, and matmuls equal to fp32 tolerance.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import torch

from leanlm.core.kernels.dispatch import use_triton

BITS = (2, 3, 4)
EPS = 1e-5
_U32 = 0xFFFFFFFF


class GroupQuant(NamedTuple):
    codes: torch.Tensor  # uint8 [..., K]
    scales: torch.Tensor  # fp32 [..., K/g]
    zeros: torch.Tensor  # uint8 [..., K/g]


def check_bits(bits: int) -> int:
    if int(bits) not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
    return int(bits)


def check_group(k: int, group_size: int) -> int:
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group size {group_size} does not divide the input size {k}")
    return k // group_size


# ----------------------------------------------------------------------------- quantize


def quantize_asym(w: torch.Tensor, bits: int, group_size: int, eps: float = EPS) -> GroupQuant:
    """Asymmetric min-max group quantization of ``w [..., K]`` along its last dimension."""
    bits = check_bits(bits)
    n_groups = check_group(w.shape[-1], group_size)
    if use_triton(w):
        from leanlm.core.kernels import triton_lowbit

        return GroupQuant(*triton_lowbit.quantize_asym(w, bits, group_size, eps))
    max_int = 2**bits - 1
    g = w.detach().float().reshape(*w.shape[:-1], n_groups, group_size)
    hi, lo = g.amax(-1, keepdim=True), g.amin(-1, keepdim=True)
    rng = (hi - lo).clamp(min=eps)
    s = rng / torch.full_like(rng, max_int)  # a tensor divisor: one IEEE division on CPU and CUDA alike
    z = torch.clamp(-torch.round(lo / s), 0, max_int)
    q = torch.clamp(torch.round(g / s) + z, 0, max_int)
    return GroupQuant(q.to(torch.uint8).reshape(w.shape), s.squeeze(-1), z.squeeze(-1).to(torch.uint8))


def dequantize(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - z) * s`` per group: codes ``[..., K]``, scales/zeros ``[..., K/g]`` -> ``dtype [..., K]``."""
    k = codes.shape[-1]
    n_groups = check_group(k, group_size)
    q = codes.float().reshape(*codes.shape[:-1], n_groups, group_size)
    w = (q - zeros.float().unsqueeze(-1)) * scales.float().unsqueeze(-1)
    return w.reshape(codes.shape).to(dtype)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int, eps: float = EPS) -> torch.Tensor:
    """Quantize then dequantize (round to nearest), in ``w``'s dtype and shape."""
    q = quantize_asym(w, bits, group_size, eps)
    return dequantize(q.codes, q.scales, q.zeros, group_size, w.dtype)


# ----------------------------------------------------------------------------- packing


def packed_words(k: int, bits: int) -> int:
    bits = check_bits(bits)
    if (k * bits) % 32:
        raise ValueError(f"{k} codes of {bits} bits do not fill whole int32 words (need K*bits % 32 == 0)")
    return k * bits // 32


def _stream_positions(k: int, bits: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Word index and bit offset of each of ``k`` codes in the packed stream."""
    pos = torch.arange(k, device=device, dtype=torch.int64) * bits
    return pos // 32, pos % 32


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> the int32 with the same 32 bits."""
    words = words & _U32
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``codes [..., K]`` (values < 2^bits) into ``int32 [..., K*bits/32]`` (little-endian stream)."""
    k = codes.shape[-1]
    n_words = packed_words(k, bits)
    if use_triton(codes):
        from leanlm.core.kernels import triton_lowbit

        return triton_lowbit.pack(codes, bits, n_words)
    q = codes.reshape(-1, k).to(torch.int64) & (2**bits - 1)
    word, off = _stream_positions(k, bits, q.device)
    out = torch.zeros(q.shape[0], n_words + 1, dtype=torch.int64, device=q.device)
    # bits never overlap, so adding the pieces is an OR; a straddling code spills into word + 1
    out.index_add_(1, word, (q << off) & _U32)
    out.index_add_(1, word + 1, q >> (32 - off))
    return _to_int32(out[:, :n_words]).reshape(*codes.shape[:-1], n_words)


def unpack(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of ``pack``: ``int32 [..., K*bits/32]`` -> ``uint8 [..., K]``."""
    n_words = packed_words(k, bits)
    if packed.shape[-1] != n_words:
        raise ValueError(
            f"packed rows have {packed.shape[-1]} words; {k} codes of {bits} bits need {n_words}"
        )
    if use_triton(packed):
        from leanlm.core.kernels import triton_lowbit

        return triton_lowbit.unpack(packed, bits, k)
    if 32 % bits == 0:  # 2 and 4 bits: codes never straddle words, so shifts alone unpack them (fast)
        shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int32)
        codes = (packed.unsqueeze(-1) >> shifts) & (2**bits - 1)
        return codes.to(torch.uint8).reshape(*packed.shape[:-1], k)
    if packed.dtype == torch.int32 and sys.byteorder == "little":
        # 3 bits, fast: the words' little-endian bytes are the stream itself, and every 3 bytes (24 bits)
        # hold exactly 8 codes at fixed bit offsets (K*3 % 32 == 0 forces K % 32 == 0, so K % 8 == 0).
        # uint8 shifts and masks only, no gathers; ~35x faster than the general path below on CPU.
        b = packed.contiguous().view(torch.uint8).reshape(*packed.shape[:-1], k // 8, 3)
        b0, b1, b2 = (t.contiguous() for t in b.unbind(-1))  # stream bits [0, 8), [8, 16), [16, 24)
        codes8 = [
            b0 & 7,
            (b0 >> 3) & 7,
            (b0 >> 6) | ((b1 & 1) << 2),  # straddles bytes 0 and 1
            (b1 >> 1) & 7,
            (b1 >> 4) & 7,
            (b1 >> 7) | ((b2 & 3) << 1),  # straddles bytes 1 and 2
            (b2 >> 2) & 7,
            b2 >> 5,
        ]
        return torch.stack(codes8, dim=-1).reshape(*packed.shape[:-1], k)
    # general path (any integer dtype, any byte order): gather each code's word and the next one
    p = packed.reshape(-1, n_words).to(torch.int64) & _U32
    p = torch.cat([p, torch.zeros_like(p[:, :1])], dim=1)  # a zero word so word + 1 always exists
    word, off = _stream_positions(k, bits, p.device)
    lo = p[:, word] >> off
    hi = p[:, word + 1] << (32 - off)  # only nonzero in the low bits when the code straddles
    codes = (lo | hi) & (2**bits - 1)
    return codes.to(torch.uint8).reshape(*packed.shape[:-1], k)


# ----------------------------------------------------------------------------- dequantize-matmul


def dequantize_packed(
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    k: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``[N, K]`` weight in ``dtype`` from its packed form."""
    if use_triton(packed):  # one pass: unpack and dequantize in registers
        from leanlm.core.kernels import triton_lowbit

        check_group(k, group_size)
        if packed.shape[-1] != packed_words(k, bits):
            raise ValueError(
                f"packed weight {tuple(packed.shape)} does not hold {k} codes of {check_bits(bits)} bits"
            )
        return triton_lowbit.dequantize_packed(packed, scales, zeros, group_size, bits, k, dtype)
    return dequantize(unpack(packed, bits, k), scales, zeros, group_size, dtype)


def lowbit_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x [..., K] @ W^T (+ bias)`` with ``W [N, K]`` stored packed; output ``[..., N]`` in ``x.dtype``."""
    bits = check_bits(bits)
    k = x.shape[-1]
    n = packed.shape[0]
    if packed.shape[1] != packed_words(k, bits):
        raise ValueError(f"packed weight {tuple(packed.shape)} does not match input size {k} at {bits} bits")
    n_groups = check_group(k, group_size)
    if tuple(scales.shape) != (n, n_groups) or tuple(zeros.shape) != (n, n_groups):
        raise ValueError(
            f"scales/zeros must be [{n}, {n_groups}], got {tuple(scales.shape)}, {tuple(zeros.shape)}"
        )
    if use_triton(x):
        from leanlm.core.kernels import triton_lowbit

        return triton_lowbit.lowbit_matmul(x, packed, scales, zeros, bits, group_size, bias)
    w = dequantize_packed(packed, scales, zeros, bits, group_size, k, x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


__all__ = [
    "BITS",
    "EPS",
    "GroupQuant",
    "check_bits",
    "check_group",
    "dequantize",
    "dequantize_packed",
    "fake_quantize",
    "lowbit_matmul",
    "pack",
    "packed_words",
    "quantize_asym",
    "unpack",
]
