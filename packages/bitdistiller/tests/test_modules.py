"""Module swap, group-size errors, checkpoint quantization_config and automatic re-quantization."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from leanlm.bitdistiller.checkpoint import attach_quantization_config, load_model_for_eval
from leanlm.bitdistiller.modules import QuantLinear, materialize, quantize_model
from leanlm.bitdistiller.quant import QuantSpec, quantize_weight
from leanlm.core.errors import UserError


def test_swap_skips_lm_head_and_reuses_parameters(tiny_model):
    m = copy.deepcopy(tiny_model)
    up = m.model.layers[0].mlp.up_proj.weight
    quantize_model(m, QuantSpec("int", 2, 32))
    quant = [n for n, x in m.named_modules() if isinstance(x, QuantLinear)]
    assert len(quant) == 4 * 7 and not any("lm_head" in n for n in quant)
    assert m.model.layers[0].mlp.up_proj.weight is up
    assert type(m.lm_head) is nn.Linear


def test_quantized_forward_equals_explicit_fake_quant(tiny_model):
    m = copy.deepcopy(tiny_model)
    spec = QuantSpec("int", 3, 32)
    quantize_model(m, spec)
    ids = torch.tensor([[1, 5, 9, 200, 3000]])
    with torch.no_grad():
        out = m(ids).logits
    ref = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for name, lin in ref.named_modules():
            if isinstance(lin, nn.Linear) and not name.endswith("lm_head"):
                lin.weight.copy_(quantize_weight(lin.weight, spec))
        expect = ref(ids).logits
        assert torch.equal(materialize(m)(ids).logits, out)
    torch.testing.assert_close(out, expect)


def test_group_size_error_names_layer(tiny_model):
    m = copy.deepcopy(tiny_model)
    with pytest.raises(UserError, match=r"layer model\.layers\.0\.self_attn\.q_proj.*fit: 32, 64"):
        quantize_model(m, QuantSpec("int", 2, 48))


def test_saved_quantization_config_requantizes(tmp_path, tiny_model, tokenizer):
    m = copy.deepcopy(tiny_model)
    spec = QuantSpec("int", 2, 32)
    quantize_model(m, spec)
    attach_quantization_config(m, spec)
    m.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "bitdistiller" and saved["bits"] == 2 and saved["group_size"] == 32
    loaded, _, got = load_model_for_eval(str(tmp_path), device="cpu")
    assert got == spec and isinstance(loaded.model.layers[1].mlp.down_proj, QuantLinear)
    ids = torch.tensor([[7, 8, 9, 10]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, m(ids).logits)
    with pytest.raises(UserError, match="trained as int2-g32"):
        load_model_for_eval(str(tmp_path), "int", 3, 32)
