"""PyTorch's weight-only int4 kernels as the fast path for 2/3/4-bit group-quantized weights.

PyTorch ships group-wise int4 weight-only matmuls: ``_weight_int4pack_mm_for_cpu`` (CPU, AVX-512 /
AVX2 kernels) and ``_weight_int4pack_mm`` ("tinygemm", CUDA). Both compute, per group of ``g`` input
weights of output row ``n``::

    W[n, k] = (q[n, k] - 8) * scale[g, n] + zero[g, n]

with 4-bit codes ``q`` in 0..15 and ``qScaleAndZeros`` bf16 ``[K/g, N, 2]``. leanlm's asymmetric codes
(``leanlm.core.kernels.lowbit``: ``W = (q - z) * s``, q in 0..2^b-1 for b = 2, 3, 4) fit that layout
exactly: the codes are unchanged and ``zero = s * (8 - z)``. The only rounding is bf16 for ``s`` and
``zero`` and the bf16 activations; the kernels accumulate in fp32.

The activation dtype decides the speed: with bf16 activations the CPU kernel reads half a byte per
weight and beats a dense fp32/bf16 ``F.linear`` by 2-8x at one row on large weights (see
``packages/core/bench/kernels.py``), while fp32/fp16 activations take a slow path 9-25x behind dense
fp32. So callers use this only for bf16 activations; fp32 keeps the exact dequantize-matmul.

Layout constraints (checked by ``cpu_supported`` / ``cuda_supported``): ``g`` in 32/64/128/256 and
dividing K; on CPU N must be a multiple of 16 (this module pads N with zero rows and slices the
output, so any N works); on CUDA K must be a multiple of 32 and N of 8.

``Int4PackWeight`` holds the prepared layout; ``int8_planes`` reuses the same kernel for int8
weight-only matmuls (see ``Int8PlaneWeight``): an offset int8 code ``u = c + 128`` in 0..255 splits
exactly into two 4-bit planes ``u = 16 * hi + lo``, so ``W = s * c`` is two int4 matmuls.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

GROUP_SIZES = (32, 64, 128, 256)
CPU_N_MULTIPLE = 16


def _op_available(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


@functools.cache
def cpu_kernel_available() -> bool:
    return _op_available("_weight_int4pack_mm_for_cpu") and _op_available(
        "_convert_weight_to_int4pack_for_cpu"
    )


@functools.cache
def cuda_kernel_available() -> bool:
    return (
        torch.cuda.is_available()
        and _op_available("_weight_int4pack_mm")
        and _op_available("_convert_weight_to_int4pack")
    )


def cpu_supported(k: int, group_size: int) -> bool:
    """True when a ``[N, K]`` weight with groups of ``group_size`` runs on the CPU int4 kernel (any N)."""
    return cpu_kernel_available() and group_size in GROUP_SIZES and k % group_size == 0


def cuda_supported(n: int, k: int, group_size: int) -> bool:
    return (
        cuda_kernel_available()
        and group_size in GROUP_SIZES
        and k % group_size == 0
        and k % 32 == 0
        and n % 8 == 0
    )


def scale_and_zeros(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """bf16 ``[K/g, N, 2]`` = (s, s * (8 - z)) from scales/zero-points ``[N, K/g]`` (any float/int dtype)."""
    s = scales.float()
    return _stack_scale_zero(s, s * (8.0 - zeros.float()))


def _stack_scale_zero(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return torch.stack([scale.float().t(), zero.float().t()], dim=-1).to(torch.bfloat16).contiguous()


def _inner_k_tiles(k: int) -> int:
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"input size {k} is not a multiple of 32; the int4 kernels cannot take it")


@dataclass
class Int4PackWeight:
    """A ``[N, K]`` weight in a kernel's packed layout; ``matmul(x)`` = ``x @ W^T`` in bf16."""

    packed: torch.Tensor  # the kernel's opaque packed tensor
    scale_zeros: torch.Tensor  # bf16 [K/g, N_padded, 2]
    group_size: int
    n: int  # true output size (the packed rows may be padded)
    k: int
    device_type: str

    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        group_size: int,
        additive_zero: torch.Tensor | None = None,
    ) -> Int4PackWeight:
        """Pack codes ``uint8 [N, K]`` (values 0..15), scales/zeros ``[N, K/g]`` for the kernel of their device.

        ``additive_zero [N, K/g]``, if given, is the kernel's zero term itself (``zeros`` is then ignored).
        """
        if additive_zero is None:
            additive_zero = scales.float() * (8.0 - zeros.float())
        n, k = codes.shape
        if group_size not in GROUP_SIZES or k % group_size:
            raise ValueError(
                f"int4 kernels need a group size in {GROUP_SIZES} dividing {k}, got {group_size}"
            )
        if tuple(scales.shape) != (n, k // group_size) or tuple(zeros.shape) != (n, k // group_size):
            raise ValueError(f"scales/zeros must be [{n}, {k // group_size}]")
        if codes.is_cuda:
            if not cuda_supported(n, k, group_size):
                raise ValueError(f"tinygemm cannot take a [{n}, {k}] weight with groups of {group_size}")
            c = codes.to(torch.uint8)
            nibbles = ((c[:, ::2] << 4) | c[:, 1::2]).contiguous()  # two codes per byte, even code high
            packed = torch.ops.aten._convert_weight_to_int4pack(nibbles, _inner_k_tiles(k))
            return cls(packed, _stack_scale_zero(scales, additive_zero), group_size, n, k, "cuda")
        if not cpu_kernel_available():
            raise RuntimeError("this PyTorch has no _weight_int4pack_mm_for_cpu")
        pad = (-n) % CPU_N_MULTIPLE
        c, s, zero = codes.to(torch.int32), scales.float(), additive_zero.float()
        if pad:  # zero rows (scale 0, zero 0) whose outputs are sliced off
            c = torch.cat([c, c.new_zeros(pad, k)])
            s = torch.cat([s, s.new_zeros(pad, s.shape[1])])
            zero = torch.cat([zero, zero.new_zeros(pad, zero.shape[1])])
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(c.contiguous(), 2)
        return cls(packed, _stack_scale_zero(s, zero), group_size, n, k, "cpu")

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., K]`` (cast to bf16) -> bf16 ``[..., N]``."""
        x2 = x.reshape(-1, self.k).to(torch.bfloat16).contiguous()
        if self.device_type == "cuda":
            y = torch.ops.aten._weight_int4pack_mm(x2, self.packed, self.group_size, self.scale_zeros)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scale_zeros)
        if y.shape[-1] != self.n:
            y = y[:, : self.n]
        return y.reshape(*x.shape[:-1], self.n)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scale_zeros.numel() * 2


def largest_group(k: int) -> int | None:
    """The largest supported group size dividing ``k`` (None if none does)."""
    for g in sorted(GROUP_SIZES, reverse=True):
        if k % g == 0:
            return g
    return None


@dataclass
class Int8PlaneWeight:
    """A per-channel int8 weight ``W = s[n] * c[n, k]`` (c in -128..127) as two exact 4-bit planes.

    ``u = c + 128 = 16 * hi + lo`` with hi, lo in 0..15, so
    ``W = 16 s (hi - 8) + s (lo - 8) + 8 s``: plane ``hi`` with scale 16 s and zero 8 s, plane ``lo``
    with scale s and zero 0, one group spanning ``g`` inputs (the scale is constant along a row, so
    any group size gives the same weight). On CPU with bf16 activations this ran the 49152 x 576
    ``lm_head`` of SmolLM2 in 3.2 ms vs 6.3 ms for ``_weight_int8pack_mm`` and 7.8 ms for bf16
    ``F.linear`` (1 thread).
    """

    hi: Int4PackWeight
    lo: Int4PackWeight

    @classmethod
    def from_int8(cls, codes: torch.Tensor, scales: torch.Tensor) -> Int8PlaneWeight:
        n, k = codes.shape
        g = largest_group(k)
        if g is None:
            raise ValueError(f"input size {k} is not a multiple of 32")
        u = codes.to(torch.int32) + 128
        s = scales.float().reshape(n, 1).expand(n, k // g)
        hi = Int4PackWeight.from_codes(u >> 4, 16 * s, s, g, additive_zero=8 * s)
        lo = Int4PackWeight.from_codes(u & 15, s, s, g, additive_zero=torch.zeros_like(s))
        return cls(hi, lo)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return self.hi.matmul(x) + self.lo.matmul(x)


__all__ = [
    "GROUP_SIZES",
    "Int4PackWeight",
    "Int8PlaneWeight",
    "cpu_kernel_available",
    "cpu_supported",
    "cuda_kernel_available",
    "cuda_supported",
    "largest_group",
    "scale_and_zeros",
]
