"""Quantizers: hand-computed groups, both rounding paths, NF3 thresholds, all-zero groups, STE gradients."""

from __future__ import annotations

import pytest
import torch

from leanlm.bitdistiller.quant import (
    NF3_NEG_LEVELS,
    NF3_NEG_THRESHOLDS,
    NF3_POS_LEVELS,
    NF3_POS_THRESHOLDS,
    QuantSpec,
    int_asym_ste,
    nf3_ste,
    quantize_weight,
)
from leanlm.core.errors import UserError


def test_int2_hand_computed_both_roundings():
    # s = (2 - -1)/3 = 1, z = 1; w/s = [-1, 0, 0.5, 2, -0.5, ...]: ties at +-0.5
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    even = int_asym_ste(w, 2, 4, "half_even")
    away = int_asym_ste(w, 2, 4, "half_away")
    assert even.tolist() == [[-1.0, 0.0, 0.0, 2.0]]  # 0.5 -> 0
    assert away.tolist() == [[-1.0, 0.0, 1.0, 2.0]]  # 0.5 -> 1
    # the no-grad path (shared kernel) equals the half-even STE path exactly
    assert torch.equal(quantize_weight(w, QuantSpec("int", 2, 4)), even)


def test_int3_clamps_and_zero_group():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, -7.0, 0.0, 3.5, 7.0]])
    out = int_asym_ste(w, 3, 4)
    assert out[0, :4].tolist() == [0.0, 0.0, 0.0, 0.0]  # eps keeps the all-zero group finite
    # group 2: s = 14/7 = 2, z = round(3.5) = 4 (half-even), q = [0, 4, round(1.75)+4=6, 7+... -> 7]
    assert out[0, 4:].tolist() == [-8.0, 0.0, 4.0, 6.0]


def test_nf3_levels_thresholds_and_zero_group():
    pos = torch.tensor(NF3_POS_THRESHOLDS)
    below, at = pos - 1e-6, pos
    # a group whose max is 1 so values are already normalized; put 1.0 first as the scale anchor
    for values, expect in ((at, NF3_POS_LEVELS[1:]), (below, NF3_POS_LEVELS[:-1])):
        w = torch.cat([torch.tensor([1.0]), values, torch.tensor([-1.0, 0.0, 0.0])]).reshape(1, 8)
        out = nf3_ste(w, 8)[0, 1:5]
        torch.testing.assert_close(out, torch.tensor(expect), rtol=0, atol=1e-7)
    neg = torch.tensor(NF3_NEG_THRESHOLDS)
    w = torch.cat([torch.tensor([1.0, -1.0]), neg, neg - 1e-6, torch.tensor([0.0])]).reshape(1, 9)[:, :8]
    out = nf3_ste(w, 8)[0]
    torch.testing.assert_close(
        out[2:5], torch.tensor(NF3_NEG_LEVELS[1:]), rtol=0, atol=1e-7
    )  # at -> toward 0
    torch.testing.assert_close(out[5:8], torch.tensor(NF3_NEG_LEVELS[:3]), rtol=0, atol=1e-7)
    zero = nf3_ste(torch.zeros(2, 8), 8)
    assert torch.isfinite(zero).all() and zero.abs().sum() == 0  # the original gave NaN here


def test_nf3_scales_each_sign_separately():
    w = torch.tensor([[4.0, 2.0, -0.5, -0.25]])
    # s+ = 4, s- = 0.5: 2/4 = 0.5 -> 0.3819939 * 4 (0.5 < 0.5025); -0.25/0.5 = -0.5 -> -0.5350227 * 0.5
    out = nf3_ste(w, 4)[0]
    torch.testing.assert_close(
        out, torch.tensor([4.0, 0.3819939494132996 * 4, -0.5, -0.5350227355957031 * 0.5])
    )


def test_ste_gradients_pass_through_rounding():
    torch.manual_seed(0)
    w = torch.randn(4, 16, requires_grad=True)
    int_asym_ste(w, 2, 8).sum().backward()
    g_int = w.grad.clone()
    # weights strictly inside the code range get exactly the upstream gradient 1 through round();
    # codes on the clamp bounds get none from the clamp; the group's max/min also feed the scale
    grouped = w.detach().reshape(4, 2, 8)
    s = (grouped.amax(-1, keepdim=True) - grouped.amin(-1, keepdim=True)) / 3
    z = torch.round(-grouped.amin(-1, keepdim=True) / s)
    code = torch.round(grouped / s) + z
    interior = (code > 0) & (code < 3)
    assert interior.sum() > 10 and torch.all(g_int.reshape(4, 2, 8)[interior] == 1.0)
    assert torch.all(g_int.reshape(4, 2, 8)[(code == 3) & (grouped != grouped.amax(-1, keepdim=True))] == 0.0)
    w.grad = None
    nf3_ste(w, 8).sum().backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "args,match",
    [
        (("int", 5, 64), "supports 2, 3, 4"),
        (("nf4", 3, 64), "unknown quant type"),
        (("nf3", 2, 64), "3-bit"),
        (("int", 2, 0), "positive"),
    ],
)
def test_bad_spec_is_a_user_error(args, match):
    with pytest.raises(UserError, match=match):
        QuantSpec(*args)


def test_spec_names():
    assert QuantSpec("int", 2, 64).name == "int2-g64"
    assert QuantSpec("int", 3, 128).name == "int3-g128"
    assert QuantSpec("nf3", 3, 64).name == "nf3-g64"  # the bit width is in the type already
