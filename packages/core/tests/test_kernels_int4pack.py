"""PyTorch int4 weight-only kernels as the fast path of packed low-bit and int8 layers (CPU; CUDA marked gpu).

References are independent of the kernels: the weight is dequantized in fp32 with ``(q - z) * s`` and
multiplied with ``F.linear`` in fp64. The bf16 kernels are held to bf16 rounding: the scale and the
zero term ``s * (8 - z)`` are rounded to bf16 (relative 2^-9 each, and the zero term can be 8 s while
the weight is 0), the activations too, and the output once more.
"""

from __future__ import annotations

import pytest
import torch

from leanlm.core.kernels import int4pack, lowbit
from leanlm.core.packed import Int8Linear, PackedLinear, quantize_lm_head

pytestmark = pytest.mark.skipif(not int4pack.cpu_kernel_available(), reason="no _weight_int4pack_mm_for_cpu")


def _random_quant(n: int, k: int, bits: int, g: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.05
    return lowbit.quantize_asym(w, bits, g)


def _bf16_bound(x: torch.Tensor, q, g: int, ref: torch.Tensor) -> torch.Tensor:
    """|error| bound per output for bf16 ``x`` against the fp64 product with the exact weight.

    The kernel's weight is ``(q - 8) bf16(s) + bf16(s (8 - z))``: each term off by at most 2^-9 of
    itself (taken as 2^-8 for slack), plus the bf16 output (2^-8 of |y|); fp32 accumulation is far below.
    """
    s = q.scales.double().repeat_interleave(g, dim=1)  # [N, K]
    z = q.zeros.double().repeat_interleave(g, dim=1)
    per_weight = s * ((q.codes.double() - 8).abs() + (8 - z).abs())
    return 2.0**-8 * (x.abs().double() @ per_weight.t()) + 2.0**-8 * ref.abs() + 1e-6


SHAPES = [(16, 64), (37, 128), (100, 256), (48, 96 * 4)]


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("g", [32, 64, 128])
def test_int4pack_matches_dequantize_reference_bf16(bits, g):
    for n, k in SHAPES:
        if k % g or (k * bits) % 32:
            continue
        q = _random_quant(n, k, bits, g, seed=n + k)
        w = lowbit.dequantize(q.codes, q.scales, q.zeros, g).double()
        for rows in (1, 3, 16):
            x = torch.randn(rows, k).to(torch.bfloat16)
            ref = x.double() @ w.t()
            packed = int4pack.Int4PackWeight.from_codes(q.codes, q.scales, q.zeros, g)
            y = packed.matmul(x)
            assert y.dtype == torch.bfloat16 and y.shape == (rows, n)
            err = (y.double() - ref).abs()
            bound = _bf16_bound(x, q, g, ref)
            assert (err <= bound).all(), (n, k, bits, g, rows, (err / bound).max().item())
        # the bound is tight enough to catch a zero-point off by one (positive x: the shifts add up)
        xp = torch.rand(1, k).to(torch.bfloat16)
        shifted = xp.double() @ (w - q.scales.double().repeat_interleave(g, 1)).t()
        y = packed.matmul(xp).double()
        assert ((y - shifted).abs() > _bf16_bound(xp, q, g, shifted)).all()


def test_int4pack_rejects_unsupported_groups():
    q = _random_quant(16, 96, 4, 16)
    assert not int4pack.cpu_supported(96, 16) and not int4pack.cpu_supported(96, 64)
    with pytest.raises(ValueError, match="group size"):
        int4pack.Int4PackWeight.from_codes(q.codes, q.scales, q.zeros, 16)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("g", [32, 64, 128])
def test_packed_linear_fp32_exact_and_bf16_fast(bits, g):
    n, k = {2: 48, 3: 32, 4: 40}[bits], 256  # N * bits fills int32 words (packed zeros); 40: padded to 48
    q = _random_quant(n, k, bits, g, seed=bits * g)
    bias = torch.randn(n)
    layer = PackedLinear.from_codes(q.codes, q.scales, q.zeros, bits, g, bias=bias, scale_dtype=torch.float32)
    w = lowbit.dequantize(q.codes, q.scales, q.zeros, g).double()
    x = torch.randn(2, 5, k)
    ref = x.double() @ w.t() + bias.double()
    assert layer.kernel_for(x) == "exact"
    y = layer(x)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)  # fp32: the exact dequantize-matmul
    xb = x.to(torch.bfloat16)
    assert layer.kernel_for(xb) == "int4pack"
    yb = layer(xb)
    assert yb.dtype == torch.bfloat16 and yb.shape == (2, 5, n)
    refb = xb.double() @ w.t() + bias.double()
    bound = (
        _bf16_bound(xb.reshape(-1, k), q, g, refb.reshape(-1, n)).reshape(2, 5, n) * 2
    )  # bias add: one more
    assert ((yb.double() - refb).abs() <= bound).all()


def test_packed_linear_layout_rebuilt_after_move(monkeypatch):
    q = _random_quant(16, 64, 2, 32)
    layer = PackedLinear.from_codes(q.codes, q.scales, q.zeros, 2, 32)
    layer(torch.randn(1, 64, dtype=torch.bfloat16))
    assert layer._int4 is not None
    layer.to(torch.device("cpu"))
    assert layer._int4 is None  # a move invalidates the prepared layout
    monkeypatch.setenv("LEANLM_PACKED_FAST", "0")
    assert layer.kernel_for(torch.randn(1, 64, dtype=torch.bfloat16)) == "exact"


@pytest.mark.parametrize("n,k", [(16, 64), (50, 96), (300, 576)])
def test_int8_planes_match_per_channel_int8(n, k):
    torch.manual_seed(n * k)
    w = torch.randn(n, k)
    head = Int8Linear.from_weight(w)
    c, s = head.weight_int8, head.weight_scale
    assert c.dtype == torch.int8 and c.abs().max() <= 127
    assert ((c.float() * s[:, None] - w).abs() <= s[:, None] / 2 + 1e-6).all()  # round to nearest
    wq = c.double() * s.double()[:, None]
    x = torch.randn(3, k)
    # fp32 accumulation of k products: within k * 2^-24 * sum |x| |w| of the exact sum (the worst-case
    # bound; a fixed 1e-5 failed now and then at k = 576)
    fp32_bound = k * 2.0**-24 * (x.abs().double() @ wq.abs().t()) + 1e-7
    assert ((head(x).double() - x.double() @ wq.t()).abs() <= fp32_bound).all()
    xb = x.to(torch.bfloat16)
    assert head.kernel_for(xb) == "int8planes"
    yb = head(xb)
    ref = xb.double() @ wq.t()
    u = c.double() + 128
    sd = s.double()[:, None]

    def bound(x: torch.Tensor) -> torch.Tensor:
        # planes (hi - 8) * bf16(16 s) + bf16(8 s) and (lo - 8) * bf16(s), each term within 2^-9 (2^-8 slack)
        # of itself, plus two bf16 outputs (each within 2^-8 of the same per-weight sum)
        per_weight = sd * (16 * ((u // 16) - 8).abs() + 8 + ((u % 16) - 8).abs())
        return 2.0**-7 * (x.abs().double() @ per_weight.t()) + 1e-6

    assert ((yb.double() - ref).abs() <= bound(xb)).all()
    xp = torch.rand(1, k).to(torch.bfloat16)  # positive x: one code off in every weight must show
    shifted = xp.double() @ (wq - sd).t()
    assert ((head(xp).double() - shifted).abs() > bound(xp)).all()


def test_quantize_lm_head_ties_embedding_to_int8_rows():
    from leanlm.core.testing.tiny_models import tiny_llama

    model = tiny_llama(num_layers=1, hidden_size=64, intermediate_size=128)
    ids = torch.tensor([[1, 5, 9, 200]])
    w = model.lm_head.weight.detach().clone()
    quantize_lm_head(model, "int8")
    head = model.lm_head
    assert isinstance(head, Int8Linear)
    emb = model.get_input_embeddings()(ids)
    torch.testing.assert_close(emb[0], head.dequantized()[ids[0]])
    assert (emb[0] - w[ids[0]]).abs().max() <= head.weight_scale.max() / 2 + 1e-6
    out = model(ids).logits
    assert torch.isfinite(out).all() and out.shape[-1] == w.shape[0]
    with pytest.raises(Exception, match="lm-head"):
        quantize_lm_head(model, "int4")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("g", [32, 64, 128])
def test_tinygemm_cuda_matches_reference(bits, g):
    n, k = 256, 512
    q = _random_quant(n, k, bits, g, seed=7)
    w = lowbit.dequantize(q.codes, q.scales, q.zeros, g).double()
    packed = int4pack.Int4PackWeight.from_codes(q.codes.cuda(), q.scales.cuda(), q.zeros.cuda(), g)
    for rows in (1, 16):
        x = torch.randn(rows, k).to(torch.bfloat16)
        y = packed.matmul(x.cuda()).cpu()
        ref = x.double() @ w.t()
        assert ((y.double() - ref).abs() <= _bf16_bound(x, q, g, ref)).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_linear_cuda_picks_a_kernel_and_matches():
    from leanlm.core import packed as packed_mod

    n, k, g = 1024, 1024, 128
    q = _random_quant(n, k, 4, g, seed=3)
    layer = PackedLinear.from_codes(q.codes, q.scales, q.zeros, 4, g).cuda()
    q = q._replace(scales=q.scales.half().float())  # the layer stores fp16 scales
    w = lowbit.dequantize(q.codes, q.scales, q.zeros, g).double()
    for rows in (1, 16):
        x = torch.randn(rows, k).to(torch.bfloat16)
        kernel = layer.kernel_for(x.cuda())
        assert kernel in ("int4pack", "exact")
        y = layer(x.cuda()).cpu()
        ref = x.double() @ w.t()
        assert ((y.double() - ref).abs() <= _bf16_bound(x, q, g, ref) * 2).all()
    assert len(packed_mod._CUDA_CHOICE) >= 2
