"""Low-bit kernels: hand-computed groups, bit layout, round trips, and Triton (interpreted) vs PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from leanlm.core.kernels import lowbit


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("LEANLM_KERNELS", "torch")


def test_quantize_hand_computed_group_rounds_half_to_even():
    # 2 bits: s = (2 - -1) / 3 = 1, z = -round(-1 / 1) = 1; 0.5 / 1 = 0.5 rounds to 0 (even), so q = 1
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    q = lowbit.quantize_asym(w, bits=2, group_size=4)
    assert q.codes.tolist() == [[0, 1, 1, 3]]
    assert q.scales.tolist() == [[1.0]] and q.zeros.tolist() == [[1]]
    assert lowbit.dequantize(*q, group_size=4).tolist() == [[-1.0, 0.0, 0.0, 2.0]]


def test_quantize_two_groups_and_all_zero_group_gives_zeros():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 6.0, 9.0]])
    q = lowbit.quantize_asym(w, bits=3, group_size=4)
    # group 0 is constant: s = eps / 7, zero-point 0, dequantizes to exact zeros (no NaN)
    assert q.scales[0, 0].item() == pytest.approx(1e-5 / 7)
    # group 1: s = 9 / 7, z = 0, codes round(w * 7 / 9) = [0, 2, 5, 7]
    assert q.codes[0, 4:].tolist() == [0, 2, 5, 7]
    deq = lowbit.dequantize(*q, group_size=4)
    assert torch.isfinite(deq).all() and deq[0, :4].tolist() == [0.0] * 4
    assert deq[0, 7].item() == pytest.approx(9.0)


def test_bad_bits_and_group_raise():
    with pytest.raises(ValueError, match="bits"):
        lowbit.quantize_asym(torch.zeros(2, 8), bits=5, group_size=4)
    with pytest.raises(ValueError, match="does not divide"):
        lowbit.quantize_asym(torch.zeros(2, 10), bits=2, group_size=4)
    with pytest.raises(ValueError, match="int32 words"):
        lowbit.pack(torch.zeros(2, 8, dtype=torch.uint8), bits=3)


def _python_stream_pack(codes: list[int], bits: int) -> list[int]:
    """Reference: one Python integer as the bit stream, cut into signed int32 words."""
    stream = sum(c << (bits * i) for i, c in enumerate(codes))
    words = []
    for w in range(len(codes) * bits // 32):
        u = (stream >> (32 * w)) & 0xFFFFFFFF
        words.append(u - 2**32 if u >= 2**31 else u)
    return words


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pack_layout_and_round_trip(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (5, 96), generator=g, dtype=torch.uint8)
    packed = lowbit.pack(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (5, 96 * bits // 32)
    assert packed[3].tolist() == _python_stream_pack(codes[3].tolist(), bits)
    assert torch.equal(lowbit.unpack(packed, bits, 96), codes)


def test_pack_natural_order_for_2_bits():
    codes = torch.tensor([[1, 2, 3] + [0] * 13], dtype=torch.uint8)
    assert lowbit.pack(codes, 2).tolist() == [[1 | (2 << 2) | (3 << 4)]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lowbit_matmul_matches_dequantized_linear(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 64, generator=g)
    x = torch.randn(3, 5, 64, generator=g).to(dtype)
    bias = torch.randn(24, generator=g)
    q = lowbit.quantize_asym(w, 3, 32)
    packed = lowbit.pack(q.codes, 3)
    out = lowbit.lowbit_matmul(x, packed, q.scales, q.zeros, 3, 32, bias)
    assert out.dtype == dtype and out.shape == (3, 5, 24)
    ref = torch.nn.functional.linear(x.float(), lowbit.dequantize(*q, group_size=32), bias)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


TRITON_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["LEANLM_KERNELS"] = "triton"
    import torch
    from leanlm.core.kernels import lowbit

    def both(fn):
        os.environ["LEANLM_KERNELS"] = "triton"
        a = fn()
        os.environ["LEANLM_KERNELS"] = "torch"
        b = fn()
        os.environ["LEANLM_KERNELS"] = "triton"
        return a, b

    g = torch.Generator().manual_seed(0)
    report = {}
    # values on a grid make exact ties (x.5 after division) likely: both roundings must agree
    w = torch.randint(-8, 9, (8, 64), generator=g).float() / 4
    w[1, :32] = 0.0  # an all-zero group
    for bits in (2, 3, 4):
        (tq, rq) = both(lambda: lowbit.quantize_asym(w, bits, 32))
        report[f"quant{bits}"] = all(torch.equal(a, b) for a, b in zip(tq, rq))
        (tp, rp) = both(lambda: lowbit.pack(rq.codes, bits))
        report[f"pack{bits}"] = torch.equal(tp, rp)
        (tu, ru) = both(lambda: lowbit.unpack(rp, bits, 64))
        report[f"unpack{bits}"] = torch.equal(tu, ru) and torch.equal(tu, rq.codes)
        x = torch.randn(5, 64, generator=g)
        bias = torch.randn(8, generator=g)
        (tm, rm) = both(lambda: lowbit.lowbit_matmul(x, rp, rq.scales, rq.zeros, bits, 32, bias))
        report[f"matmul{bits}"] = float((tm - rm).abs().max())
        # GPTQ layout: qweight [K*b/32, N] and scales/zeros [K/g, N], passed as transposed views
        qweight, scales_t, zeros_t = rp.t().contiguous(), rq.scales.t().contiguous(), rq.zeros.t().contiguous()
        (tg, _) = both(lambda: lowbit.lowbit_matmul(x, qweight.t(), scales_t.t(), zeros_t.t(), bits, 32, None))
        report[f"gptq{bits}"] = float((tg + bias - rm).abs().max())
        # one row (decoding): the GEMV kernel
        x1 = torch.randn(1, 64, generator=g)
        (t1, r1) = both(lambda: lowbit.lowbit_matmul(x1, rp, rq.scales, rq.zeros, bits, 32, bias))
        report[f"matmul_rows1_{bits}"] = float((t1 - r1).abs().max())
        (tg1, _) = both(lambda: lowbit.lowbit_matmul(x1, qweight.t(), scales_t.t(), zeros_t.t(), bits, 32, None))
        report[f"gptq_rows1_{bits}"] = float((tg1 + bias - r1).abs().max())
        # more rows than the GEMV kernel takes: dequantize once (Triton), then a plain matmul
        x20 = torch.randn(20, 64, generator=g)
        (tb, rb) = both(lambda: lowbit.lowbit_matmul(x20, rp, rq.scales, rq.zeros, bits, 32, bias))
        report[f"matmul_rows20_{bits}"] = float((tb - rb).abs().max())
        (td, rd) = both(lambda: lowbit.dequantize_packed(rp, rq.scales, rq.zeros, bits, 32, 64, torch.float32))
        report[f"dequant{bits}"] = torch.equal(td, rd)
    xb = torch.randn(4, 64, generator=g).to(torch.bfloat16)
    os.environ["LEANLM_KERNELS"] = "triton"
    ob = lowbit.lowbit_matmul(xb, rp, rq.scales, rq.zeros, 4, 32, None)
    report["bf16_dtype"] = str(ob.dtype)
    print("REPORT" + json.dumps(report))
    """
)


def test_triton_kernels_match_torch_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", LEANLM_KERNELS="triton")
    proc = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    report = json.loads(line[len("REPORT") :])
    for bits in (2, 3, 4):
        assert report[f"quant{bits}"] and report[f"pack{bits}"] and report[f"unpack{bits}"], report
        assert report[f"matmul{bits}"] < 1e-4, report
        assert report[f"gptq{bits}"] < 1e-4, report
        assert report[f"matmul_rows20_{bits}"] < 1e-4 and report[f"dequant{bits}"], report
        assert report[f"matmul_rows1_{bits}"] < 1e-4 and report[f"gptq_rows1_{bits}"] < 1e-4, report
    assert report["bf16_dtype"] == "torch.bfloat16"


@pytest.mark.parametrize("k", [32, 96, 2048])
def test_unpack_3_bit_fast_path_matches_general_path(k, monkeypatch):
    # the byte-wise fast path (little-endian hosts, int32 words) against the general word-gather path,
    # which unpack takes on a big-endian host; leading dims and a transposed (GPTQ qweight) view included
    g = torch.Generator().manual_seed(k)
    codes = torch.randint(0, 8, (2, 5, k), generator=g, dtype=torch.uint8)
    packed = lowbit.pack(codes, 3)
    packed_t = packed[1].t().contiguous().t()  # [5, W] with strides (1, 5)
    fast, fast_t = lowbit.unpack(packed, 3, k), lowbit.unpack(packed_t, 3, k)
    monkeypatch.setattr(sys, "byteorder", "big")
    general = lowbit.unpack(packed, 3, k)
    assert fast.dtype == general.dtype == torch.uint8 and fast.shape == (2, 5, k)
    assert torch.equal(fast, general) and torch.equal(fast, codes) and torch.equal(fast_t, codes[1])
    # a 3-bit K must be a multiple of 32 (whole int32 words), so the fast path covers every valid K
    with pytest.raises(ValueError, match="int32 words"):
        lowbit.unpack(torch.zeros(1, 3, dtype=torch.int32), 3, k + 8)
