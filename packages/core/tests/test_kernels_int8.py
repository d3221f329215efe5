"""int8 kernels: the PyTorch path against float64 formulas, and every Triton kernel against the PyTorch path.

The Triton kernels run on CPU under ``TRITON_INTERPRET=1``; that variable (and ``LEANLM_KERNELS=triton``)
must be set before triton is imported, so the comparison runs in a subprocess: this file run as a
script prints one JSON object of per-kernel differences, and the tests below read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from leanlm.core.kernels import int8

# ----------------------------------------------------------------------------------- PyTorch path


def _x(m: int, k: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.linspace(0.1, 5.0, m)[:, None]
    return x.to(dtype)


def test_quantize_rowwise_matches_formula():
    x = _x(7, 33)
    q, s = int8.quantize_rowwise(x)
    assert q.dtype == torch.int8 and q.shape == (7, 33) and s.dtype == torch.float32 and s.shape == (7,)
    absmax = x.abs().amax(dim=1)
    torch.testing.assert_close(s, absmax, rtol=0, atol=0)
    # 127 / s correctly rounded to fp32 (fp64 division then one rounding is exact for fp32 operands)
    expected = torch.round(x * (127.0 / absmax.double()).float()[:, None])
    assert torch.equal(q.to(torch.float32), expected)
    assert int(q.abs().amax(dim=1).min()) == 127  # every row reaches the full range


def test_all_zero_rows_give_zeros_not_nan():
    x = _x(4, 16)
    x[1] = 0
    q, s = int8.quantize_rowwise(x)
    assert torch.equal(q[1], torch.zeros(16, dtype=torch.int8))
    back = int8.dequantize_rowwise(q, s)
    assert torch.isfinite(back).all() and torch.equal(back[1], torch.zeros(16))
    qt, st = int8.quantize_columnwise_transpose(torch.zeros(3, 5))
    assert torch.equal(qt, torch.zeros(5, 3, dtype=torch.int8)) and torch.isfinite(st).all()
    qg, sg = int8.quantize_global(torch.zeros(3, 5))
    assert torch.equal(qg, torch.zeros(3, 5, dtype=torch.int8)) and float(sg) > 0
    w = _x(5, 16, seed=9)
    qw, sw = int8.quantize_global(w)
    out = int8.int8_matmul_global_dequantize(q, qw.t(), s, sw)
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros(5))


def test_columnwise_transpose_is_rowwise_of_transpose():
    x = _x(9, 20, seed=1)
    qt, st = int8.quantize_columnwise_transpose(x)
    q2, s2 = int8.quantize_rowwise(x.t().contiguous())
    assert qt.shape == (20, 9) and torch.equal(qt, q2) and torch.equal(st, s2)


def test_global_and_global_transpose():
    x = _x(6, 10, seed=2)
    q, s = int8.quantize_global(x)
    assert s.dim() == 0 and float(s) == float(x.abs().max())
    assert torch.equal(q.float(), torch.round(x * (127.0 / x.abs().max().double()).float()))
    qt, st = int8.quantize_global_transpose(x)
    assert torch.equal(qt, q.t()) and qt.is_contiguous() and torch.equal(st, s)


def test_dequantize_error_is_half_a_step():
    x = _x(8, 64, seed=3)
    q, s = int8.quantize_rowwise(x)
    back = int8.dequantize_rowwise(q, s, dtype=torch.float32)
    # rounding error of one element is at most half a quantization step, s / 127 / 2 (plus fp32 slack)
    bound = s[:, None] / 254 * (1 + 1e-5)
    assert ((back - x).abs() <= bound).all()
    assert int8.dequantize_rowwise(q, s, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("shape", [(1, 8, 8), (5, 7, 3), (17, 24, 40), (33, 64, 16)])
def test_int_mm_exact(shape, monkeypatch):
    m, k, n = shape
    g = torch.Generator().manual_seed(m)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g).t()  # a transposed view, like W^T
    ref = a.long() @ b.long()
    assert torch.equal(int8.int_mm(a, b).long(), ref)
    monkeypatch.setattr(int8, "_int_mm_ok", lambda a, b: False)  # the exact int32 fallback
    assert torch.equal(int8.int_mm(a, b).long(), ref)


def test_int_mm_rejects_non_int8():
    assert int8._int_mm_ok(torch.empty(4, 12, dtype=torch.int8), torch.empty(12, 5, dtype=torch.int8))
    assert not int8._int_mm_ok(torch.empty(4, 12), torch.empty(12, 5))
    with pytest.raises(ValueError, match="inner"):
        int8.int_mm(torch.empty(4, 12, dtype=torch.int8), torch.empty(11, 5, dtype=torch.int8))


@pytest.mark.parametrize("rowwise", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_matmul_dequantize_close_to_float(rowwise, dtype):
    x, w = _x(24, 48, seed=4), _x(16, 48, seed=5)
    bias = torch.linspace(-1, 1, 16)
    qx, sx = int8.quantize_rowwise(x)
    if rowwise:
        qw, sw = int8.quantize_rowwise(w)
        out = int8.int8_matmul_rowwise_dequantize(qx, qw.t(), sx, sw, bias, dtype=dtype)
        wd = qw.double() * sw.double()[:, None] / 127
    else:
        qw, sw = int8.quantize_global(w)
        out = int8.int8_matmul_global_dequantize(qx, qw.t(), sx, sw, bias, dtype=dtype)
        wd = qw.double() * sw.double() / 127
    assert out.dtype == dtype and out.shape == (24, 16)
    xd = qx.double() * sx.double()[:, None] / 127
    exact = xd @ wd.t() + bias.double()
    # the kernel is exact up to its fp32 epilogue (and the final cast to bf16)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol)
    # and the int8 product is close to the float product: relative Frobenius error under 2%
    rel = (out.double() - (x.double() @ w.double().t() + bias.double())).norm() / exact.norm()
    assert rel < 0.02


def test_bad_shapes_raise():
    q = torch.zeros(4, 8, dtype=torch.int8)
    with pytest.raises(ValueError, match="inner"):
        int8.int8_matmul_global_dequantize(
            q, torch.zeros(7, 3, dtype=torch.int8), torch.ones(4), torch.ones(())
        )
    with pytest.raises(ValueError, match="scale_b"):
        int8.int8_matmul_rowwise_dequantize(
            q, torch.zeros(8, 3, dtype=torch.int8), torch.ones(4), torch.ones(2)
        )
    with pytest.raises(ValueError, match="2-D"):
        int8.quantize_rowwise(torch.zeros(2, 3, 4))


# ----------------------------------------------------------------------------------- Triton (interpreted)

SCRIPT_TIMEOUT = 600


def _compare_triton_with_torch() -> dict:
    """Run each public kernel on the Triton path, then on the PyTorch path; report the differences."""
    from leanlm.core.kernels.dispatch import use_triton

    def both(fn, *args, **kwargs):
        os.environ["LEANLM_KERNELS"] = "triton"
        assert use_triton(args[0]), "the Triton path is not selected"
        tri = fn(*args, **kwargs)
        os.environ["LEANLM_KERNELS"] = "torch"
        ref = fn(*args, **kwargs)
        os.environ["LEANLM_KERNELS"] = "triton"
        return tri, ref

    def diff(tri, ref) -> dict:
        tri, ref = tri if isinstance(tri, tuple) else (tri,), ref if isinstance(ref, tuple) else (ref,)
        out = {"shapes_equal": all(t.shape == r.shape and t.dtype == r.dtype for t, r in zip(tri, ref))}
        out["max_abs"] = max(
            float((t.double() - r.double()).abs().max()) if t.numel() else 0.0 for t, r in zip(tri, ref)
        )
        out["max_rel"] = max(
            float(((t.double() - r.double()).abs() / r.double().abs().clamp_min(1e-6)).max())
            if t.numel()
            else 0.0
            for t, r in zip(tri, ref)
        )
        out["finite"] = all(bool(torch.isfinite(t.double()).all()) for t in tri)
        return out

    torch.manual_seed(0)
    report: dict = {}
    for dtype in (torch.float32, torch.bfloat16):
        tag = str(dtype).split(".")[-1]
        x = (torch.randn(19, 70) * torch.linspace(0.1, 4, 19)[:, None]).to(dtype)
        x[3] = 0  # an all-zero row
        xt = x.t()  # a non-contiguous input
        report[f"quantize_rowwise/{tag}"] = diff(*both(int8.quantize_rowwise, x))
        report[f"quantize_rowwise_strided/{tag}"] = diff(*both(int8.quantize_rowwise, xt))
        report[f"quantize_columnwise_transpose/{tag}"] = diff(*both(int8.quantize_columnwise_transpose, x))
        report[f"quantize_global/{tag}"] = diff(*both(int8.quantize_global, x))
        report[f"quantize_global_transpose/{tag}"] = diff(*both(int8.quantize_global_transpose, x))
        q, s = int8.quantize_rowwise(x)
        report[f"dequantize_rowwise/{tag}"] = diff(*both(int8.dequantize_rowwise, q, s, dtype))
        w = (torch.randn(24, 70) * 0.05).to(dtype)
        bias = torch.randn(24).to(dtype)
        qw, sw = int8.quantize_rowwise(w)
        qg, sg = int8.quantize_global(w)
        for name, has_bias in (("bias", True), ("nobias", False)):
            b = bias if has_bias else None
            report[f"matmul_rowwise/{tag}/{name}"] = diff(
                *both(int8.int8_matmul_rowwise_dequantize, q, qw.t(), s, sw, b, dtype=dtype)
            )
            report[f"matmul_global/{tag}/{name}"] = diff(
                *both(int8.int8_matmul_global_dequantize, q, qg.t(), s, sg, b, dtype=dtype)
            )
    # a K that is not a multiple of the K block and an M, N above one tile
    a = torch.randint(-127, 128, (130, 77), dtype=torch.int8)
    bmat = torch.randint(-127, 128, (77, 140), dtype=torch.int8)
    sa, sb = torch.rand(130) + 0.5, torch.rand(140) + 0.5
    report["matmul_rowwise/multi_tile"] = diff(*both(int8.int8_matmul_rowwise_dequantize, a, bmat, sa, sb))
    # big enough for the 128 x 128 x 128 pipelined tiles, with ragged edges in M, N and K
    a = torch.randint(-127, 128, (260, 300), dtype=torch.int8)
    bmat = torch.randint(-127, 128, (270, 300), dtype=torch.int8).t()
    sa, sb = torch.rand(260) + 0.5, torch.rand(())
    report["matmul_global/big_tiles"] = diff(*both(int8.int8_matmul_global_dequantize, a, bmat, sa, sb))
    return report


@pytest.fixture(scope="module")
def triton_report() -> dict:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", LEANLM_KERNELS="triton")
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


QUANT_KERNELS = [
    "quantize_rowwise",
    "quantize_rowwise_strided",
    "quantize_columnwise_transpose",
    "quantize_global",
    "quantize_global_transpose",
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kernel", QUANT_KERNELS)
def test_triton_quantize_exact(triton_report, kernel, dtype):
    r = triton_report[f"{kernel}/{dtype}"]
    assert r["shapes_equal"] and r["finite"]
    assert r["max_abs"] == 0.0  # identical int8 values and identical scales


# TRITON_INTERPRET's fp32 -> bf16 cast rounds ties up, not to even: one bf16 ulp (2**-7 relative) of
# slack for bf16 outputs; fp32 outputs must match exactly or to fp32 rounding.
BF16_ULP = 2.0**-7


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_triton_dequantize(triton_report, dtype):
    r = triton_report[f"dequantize_rowwise/{dtype}"]
    assert r["shapes_equal"] and r["finite"]
    assert r["max_rel"] <= (BF16_ULP if dtype == "bfloat16" else 0.0)


@pytest.mark.parametrize(
    "key",
    [
        f"matmul_{kind}/{dtype}/{bias}"
        for kind in ("rowwise", "global")
        for dtype in ("float32", "bfloat16")
        for bias in ("bias", "nobias")
    ]
    + ["matmul_rowwise/multi_tile", "matmul_global/big_tiles"],
)
def test_triton_matmul_close(triton_report, key):
    r = triton_report[key]
    assert r["shapes_equal"] and r["finite"]
    # the int32 accumulators are exact and the fp32 epilogue has the same operation order
    assert r["max_rel"] <= (BF16_ULP if "bfloat16" in key else 1e-6)


if __name__ == "__main__":
    print(json.dumps(_compare_triton_with_torch()))
