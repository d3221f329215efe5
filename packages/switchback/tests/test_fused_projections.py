"""SwitchBack's exclusion rules on each tiny architecture, Phi-3's fused projections included."""

import copy
import logging

import pytest
import torch
from torch import nn

from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_model
from leanlm.switchback.surgery import swap_linear_layers

KV_NAMES = ("k_proj", "v_proj", "qkv_proj")


@pytest.fixture(scope="module")
def models():
    return {arch: tiny_model(arch) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_exclusions_keep_k_v_and_head_in_float(models, arch, caplog):
    model = copy.deepcopy(models[arch])
    ids = torch.randint(5, 2000, (1, 8), generator=torch.Generator().manual_seed(0))
    want = model(ids).logits
    with caplog.at_level(logging.WARNING, logger="leanlm.switchback.surgery"):
        swapped = swap_linear_layers(model)
    last = {n.rsplit(".", 1)[-1] for n in swapped}
    assert not last & {*KV_NAMES, "lm_head"}
    assert {"o_proj", "down_proj"} <= last  # the rest is swapped
    assert last & {"gate_proj", "gate_up_proj"} and last & {"up_proj", "gate_up_proj"}
    for name, module in model.named_modules():  # every k/v-carrying layer is still a plain float Linear
        if name.rsplit(".", 1)[-1] in KV_NAMES:
            assert type(module) is nn.Linear
    notices = [r.getMessage() for r in caplog.records]
    if arch == "phi3":  # q, k and v share qkv_proj: kept in float, said in one line
        assert len(notices) == 1 and "qkv_proj" in notices[0] and "k_proj/v_proj are excluded" in notices[0]
    else:
        assert notices == []
    got = model(ids).logits  # int8 forward stays close to float
    assert torch.isfinite(got).all() and (got - want).abs().max() < 0.1 * want.abs().max()


def test_phi3_fused_rules_follow_their_parts(models, caplog):
    names = lambda m, **kw: {n.rsplit(".", 1)[-1] for n in swap_linear_layers(copy.deepcopy(m), **kw)}  # noqa: E731
    phi3 = models["phi3"]
    assert "qkv_proj" in names(phi3, exclude="lm_head")  # k/v not excluded: the fused layer is swapped
    with caplog.at_level(logging.WARNING, logger="leanlm.switchback.surgery"):
        got = names(phi3, exclude="lm_head,up_proj")
    assert "gate_up_proj" not in got and "qkv_proj" in got
    assert any(
        "gate_up_proj" in r.getMessage() and "up_proj is excluded" in r.getMessage() for r in caplog.records
    )
