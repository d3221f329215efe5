"""Compiled Triton kernels on a CUDA GPU against the PyTorch path on the same GPU, at model shapes.

The interpreter tests (test_kernels_int8.py, test_kernels_lowbit.py) check the kernels' logic at
small shapes on CPU; these check what the interpreter cannot: the compiled code, tile sizes chosen
for real shapes, masked edge tiles, and cuBLAS ``torch._int_mm`` as the reference. Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from leanlm.core.kernels import int8, lowbit
from leanlm.core.kernels.dispatch import use_triton

pytestmark = pytest.mark.gpu

BF16_ULP = 2.0**-7


@pytest.fixture
def on_backend(monkeypatch):
    """Call ``fn`` on the Triton path, then on the PyTorch path; return both results."""

    def both(fn, *args, **kwargs):
        monkeypatch.setenv("LEANLM_KERNELS", "triton")
        tri = fn(*args, **kwargs)
        monkeypatch.setenv("LEANLM_KERNELS", "torch")
        ref = fn(*args, **kwargs)
        monkeypatch.setenv("LEANLM_KERNELS", "auto")
        return tri, ref

    return both


def _x(m: int, k: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    scale = torch.linspace(0.1, 5.0, m, device="cuda")[:, None]  # rows of very different ranges
    return (torch.randn(m, k, device="cuda", generator=g) * scale).to(dtype)


def test_auto_dispatch_picks_triton_for_cuda_tensors(monkeypatch):
    monkeypatch.setenv("LEANLM_KERNELS", "auto")
    assert use_triton(torch.zeros(1, device="cuda"))
    assert not use_triton(torch.zeros(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 4096), (2048, 4096), (333, 1000)])
def test_int8_quantizers_identical(on_backend, dtype, shape):
    x = _x(*shape, dtype)
    x[0] = 0  # an all-zero row
    for fn in (
        int8.quantize_rowwise,
        int8.quantize_columnwise_transpose,
        int8.quantize_global,
        int8.quantize_global_transpose,
    ):
        (tq, ts), (rq, rs) = on_backend(fn, x)
        assert torch.equal(tq, rq), fn.__name__
        assert torch.equal(ts, rs), fn.__name__
    (tq, _), _ = on_backend(int8.quantize_rowwise, x.t())  # a strided (transposed) input
    assert torch.equal(tq, int8.quantize_rowwise(x.t().contiguous())[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_dequantize(on_backend, dtype):
    q, s = int8.quantize_rowwise(_x(512, 4096, torch.float32))
    tri, ref = on_backend(int8.dequantize_rowwise, q, s, dtype)
    assert tri.dtype == ref.dtype == dtype
    rel = ((tri.double() - ref.double()).abs() / ref.double().abs().clamp_min(1e-6)).max()
    assert float(rel) <= (BF16_ULP if dtype == torch.bfloat16 else 1e-6)


@pytest.mark.parametrize("rowwise", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mkn", [(1, 4096, 4096), (16, 4096, 11008), (2048, 4096, 4096), (300, 520, 1000)])
def test_int8_matmul_matches_cublas_int_mm(on_backend, rowwise, dtype, mkn):
    m, k, n = mkn
    x, w = _x(m, k, dtype, seed=1), _x(n, k, dtype, seed=2) * 0.02
    bias = torch.linspace(-1, 1, n, device="cuda").to(dtype)
    qx, sx = int8.quantize_rowwise(x)
    if rowwise:
        qw, sw = int8.quantize_rowwise(w)
        fn = int8.int8_matmul_rowwise_dequantize
    else:
        qw, sw = int8.quantize_global(w)
        fn = int8.int8_matmul_global_dequantize
    tri, ref = on_backend(fn, qx, qw.t(), sx, sw, bias, dtype=dtype)
    assert tri.dtype == ref.dtype == dtype and tri.shape == (m, n)
    assert torch.isfinite(tri).all()
    # int32 accumulation is exact on both paths and the epilogues are the same fp32 formula, except that
    # the compiled kernel may fuse "* scale + bias" into one FMA: a few fp32 ulps of the row's magnitude
    err = (tri.double() - ref.double()).abs()
    if dtype == torch.bfloat16:
        assert float((err / ref.double().abs().clamp_min(1e-3)).max()) <= BF16_ULP
    else:
        assert float(err.max()) <= 4 * 2.0**-23 * float(ref.double().abs().max())
    # and the int8 product approximates the float product
    exact = x.double() @ w.double().t() + bias.double()
    assert float((tri.double() - exact).norm() / exact.norm()) < 0.03


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lowbit_quantize_pack_unpack_identical(on_backend, bits):
    w = _x(1024, 4096, torch.float32, seed=3) * 0.02
    w[5, :128] = 0  # an all-zero group
    tq, rq = on_backend(lowbit.quantize_asym, w, bits, 128)
    for a, b in zip(tq, rq):
        assert torch.equal(a, b)
    tp, rp = on_backend(lowbit.pack, rq.codes, bits)
    assert torch.equal(tp, rp)
    tu, ru = on_backend(lowbit.unpack, rp, bits, 4096)
    assert torch.equal(tu, ru) and torch.equal(tu, rq.codes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("m", [1, 7, 512])
def test_lowbit_matmul_matches_dequantized_linear(on_backend, dtype, bits, m):
    k, n, g = 4096, 2048, 128
    w = _x(n, k, torch.float32, seed=4) * 0.02
    q = lowbit.quantize_asym(w, bits, g)
    packed = lowbit.pack(q.codes, bits)
    x = _x(m, k, dtype, seed=5)
    bias = torch.randn(n, device="cuda")
    tri, ref = on_backend(lowbit.lowbit_matmul, x, packed, q.scales, q.zeros, bits, g, bias)
    assert tri.dtype == ref.dtype == dtype and tri.shape == (m, n)
    exact = x.double() @ lowbit.dequantize(*q, group_size=g).double().t() + bias.double()
    # both round the output to 16 bits; the Triton path accumulates in fp32 over K = 4096
    assert float((tri.double() - exact).norm() / exact.norm()) < 5e-3
    assert float((ref.double() - exact).norm() / exact.norm()) < 5e-3
