"""SwitchBack layers against StandardLinear: outputs and both gradients within int8 tolerance."""

from __future__ import annotations

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.core.testing.fixtures import DEVICES
from leanlm.switchback.layers import (
    StandardLinear,
    SwitchBackLinear,
    SwitchBackLinearMemEfficient,
    SwitchBackLinearVectorwise,
    variant_class,
)

INT8_CLASSES = [SwitchBackLinear, SwitchBackLinearVectorwise, SwitchBackLinearMemEfficient]

# Relative Frobenius error bounds for Gaussian X [2, 48, 256], W [192, 256] (measured ~0.8-1.3%).
# Row-wise int8 noise is about absmax / (127 * sqrt(12)) per element, ~0.7% of the RMS for 256
# Gaussian values; a global weight scale (absmax over 49k values) adds ~1%.
OUT_BOUND = 0.03
GRAD_X_BOUND = 0.03
# dW = G^T X runs in float for global/vectorwise (same as StandardLinear up to summation order);
# mem_efficient uses the dequantized int8 X (~0.7%).
GRAD_W_BOUND = {SwitchBackLinear: 1e-5, SwitchBackLinearVectorwise: 1e-5, SwitchBackLinearMemEfficient: 0.02}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


def _pair(cls, dtype=torch.float32, bias=True, seed=0, device="cpu"):
    torch.manual_seed(seed)
    ref = StandardLinear(256, 192, bias=bias).to(device, dtype)
    layer = cls(256, 192, bias=bias).to(device, dtype)
    layer.load_state_dict(ref.state_dict())
    return ref, layer


def _run(layer, x, g):
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.backward(g)
    return out, x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", INT8_CLASSES)
def test_forward_and_gradients_match_standard(cls, device):
    ref, layer = _pair(cls, device=device)
    torch.manual_seed(1)
    x, g = torch.randn(2, 48, 256, device=device), torch.randn(2, 48, 192, device=device)
    o_ref, gx_ref, gw_ref, gb_ref = _run(ref, x, g)
    o, gx, gw, gb = _run(layer, x, g)
    assert o.shape == o_ref.shape and gx.shape == x.shape and gw.shape == layer.weight.shape
    assert _rel(o, o_ref) < OUT_BOUND
    assert _rel(gx, gx_ref) < GRAD_X_BOUND
    assert _rel(gw, gw_ref) < GRAD_W_BOUND[cls]
    torch.testing.assert_close(gb, gb_ref)  # the bias gradient is a float sum either way
    assert _rel(o, o_ref) > 0  # really int8: not bit-identical to the float layer


def test_standard_linear_equals_nn_linear():
    torch.manual_seed(0)
    plain = torch.nn.Linear(32, 16)
    ref = StandardLinear(32, 16)
    ref.load_state_dict(plain.state_dict())
    x = torch.randn(5, 32)
    o1, gx1, gw1, gb1 = _run(plain, x, torch.ones(5, 16))
    o2, gx2, gw2, gb2 = _run(ref, x, torch.ones(5, 16))
    for a, b in [(o1, o2), (gx1, gx2), (gw1, gw2), (gb1, gb2)]:
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", INT8_CLASSES + [StandardLinear])
def test_bf16_in_bf16_out(cls, device):
    ref, layer = _pair(cls, dtype=torch.bfloat16, device=device)
    x = torch.randn(3, 7, 256, dtype=torch.bfloat16, device=device)
    o, gx, gw, gb = _run(layer, x, torch.randn(3, 7, 192, dtype=torch.bfloat16, device=device))
    assert o.dtype == gx.dtype == gw.dtype == gb.dtype == torch.bfloat16
    o_ref = ref(x)
    assert _rel(o, o_ref) < OUT_BOUND + 0.01  # bf16 adds its own ~0.4% rounding


@pytest.mark.parametrize("cls", INT8_CLASSES)
def test_all_zero_rows_give_zero_outputs_and_gradients(cls):
    _, layer = _pair(cls, bias=False)
    x = torch.randn(4, 256)
    x[2] = 0
    g = torch.randn(4, 192)
    g[1] = 0
    o, gx, gw, _ = _run(layer, x, g)
    assert torch.isfinite(o).all() and torch.isfinite(gx).all() and torch.isfinite(gw).all()
    assert torch.equal(o[2], torch.zeros(192)) and torch.equal(gx[1], torch.zeros(256))
    _, gx0, gw0, _ = _run(layer, torch.zeros(4, 256), torch.zeros(4, 192))
    assert torch.equal(gx0, torch.zeros(4, 256))


@pytest.mark.parametrize("cls", INT8_CLASSES)
def test_prepare_for_eval_gives_identical_outputs(cls):
    _, layer = _pair(cls)
    layer.eval()
    x = torch.randn(2, 9, 256)
    with torch.no_grad():
        before = layer(x)
        layer.prepare_for_eval()
        after = layer(x)
    assert layer.weight is None and layer.weight_int8.dtype == torch.int8
    assert torch.equal(before, after)
    layer.train()
    with pytest.raises(RuntimeError, match="prepare_for_eval"):
        layer(x)


def test_prepare_for_eval_can_keep_the_weight():
    _, layer = _pair(SwitchBackLinear)
    layer.prepare_for_eval(free_weight=False)
    assert layer.weight is not None
    layer.train()
    assert layer(torch.randn(3, 256)).shape == (3, 192)


def test_variant_errors():
    with pytest.raises(UserError, match="unknown SwitchBack variant"):
        variant_class("int4")
    with pytest.raises(UserError, match="cannot be combined"):
        SwitchBackLinear(8, 8, vectorwise=True, mem_efficient=True)
    assert variant_class("switchback") is SwitchBackLinear


@pytest.mark.parametrize("cls", INT8_CLASSES + [StandardLinear])
def test_autocast_runs_in_bf16_like_nn_linear(cls):
    """fp32 weights under bf16 autocast: bf16 compute and output (as nn.Linear), fp32 master gradients."""
    ref, layer = _pair(cls, bias=True)
    plain = torch.nn.Linear(256, 192)
    plain.load_state_dict(ref.state_dict())
    x = torch.randn(4, 9, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, expected = layer(x), plain(x)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert _rel(out.float(), expected.float()) < OUT_BOUND + 0.01
    out.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and layer.bias.grad.dtype == torch.float32
    assert torch.isfinite(layer.weight.grad).all()
