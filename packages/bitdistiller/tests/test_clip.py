"""Clipping search: exact error formula, lower output error than no clipping, cache save/apply checks."""

from __future__ import annotations

import copy

import pytest
import torch

from leanlm.bitdistiller.clip import (
    _HessianHook,
    apply_clip,
    group_error,
    load_clip,
    run_clip_search,
    save_clip,
    search_clip,
)
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit


def test_quadratic_form_equals_token_mse():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(6, 16, generator=g), torch.randn(50, 16, generator=g)
    w_hat = lowbit.fake_quantize(w, 2, 8)
    hook = _HessianHook(8)
    hook(None, (x,), None)
    direct = ((x.reshape(50, 1, 2, 8) * (w_hat - w).reshape(1, 6, 2, 8)).sum(-1) ** 2).mean(0)  # [6, 2]
    torch.testing.assert_close(group_error(w, w_hat, hook.value()), direct, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("quant_type,bits", [("int", 2), ("nf3", 3)])
def test_search_lowers_layer_output_error(quant_type, bits):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 64, generator=g)
    w[:, ::16] *= 6  # outliers make clipping worthwhile
    x = torch.randn(256, 64, generator=g)
    spec = QuantSpec(quant_type, bits, 32)
    hook = _HessianHook(32)
    hook(None, (x,), None)
    mx, mn = search_clip(w, hook.value(), spec, n_grid=10)
    clipped = torch.minimum(torch.maximum(w.reshape(32, 2, 32), mn), mx).reshape(32, 64)
    from leanlm.bitdistiller.clip import _fake_quant

    err_plain = ((x @ (_fake_quant(w, spec) - w).t()) ** 2).mean()
    err_clip = ((x @ (_fake_quant(clipped, spec) - w).t()) ** 2).mean()
    assert err_clip < (0.9 if quant_type == "int" else 0.99) * err_plain


@pytest.fixture(scope="module")
def tiny_clips(tiny_model, tokenizer):
    from leanlm.bitdistiller.clip import calibration_blocks, calibration_texts

    blocks = calibration_blocks(tokenizer, calibration_texts("text", limit=100), 2, 64)
    spec = QuantSpec("int", 2, 32)
    return spec, blocks, run_clip_search(copy.deepcopy(tiny_model), blocks, spec, n_grid=8)


def test_clip_search_on_tiny_llama_skips_qk_and_lowers_error(tiny_model, tiny_clips):
    from leanlm.bitdistiller.modules import quantize_model

    spec, blocks, clips = tiny_clips
    names = [c[0] for c in clips]
    assert len(names) == 4 * 5 and not any("q_proj" in n or "k_proj" in n for n in names)
    assert names[0].startswith("model.layers.0.")
    ids = blocks[:1]
    with torch.no_grad():
        ref = tiny_model(ids).logits
        rtn = quantize_model(copy.deepcopy(tiny_model), spec)
        clipped = quantize_model(copy.deepcopy(tiny_model), spec)
        apply_clip(clipped, {"clip": clips}, spec)
        assert ((clipped(ids).logits - ref) ** 2).mean() < ((rtn(ids).logits - ref) ** 2).mean()


def test_clip_cache_save_apply_and_mismatch(tmp_path, tiny_model, tiny_clips):
    spec, _, clips = tiny_clips
    path = save_clip(tmp_path / "c.pt", clips, spec, tiny_model)
    data = load_clip(path)
    assert data["spec"]["group_size"] == 32 and len(data["clip"]) == len(clips)
    m = copy.deepcopy(tiny_model)
    assert apply_clip(m, path, spec) == len(clips)
    name, mx, mn = clips[0]
    w = m.get_submodule(name).weight.reshape(mx.shape[0], mx.shape[1], -1)
    assert torch.all(w <= mx + 1e-7) and torch.all(w >= mn - 1e-7)
    from leanlm.core.testing.tiny_models import tiny_llama

    other = tiny_llama(hidden_size=96, num_heads=4, num_kv_heads=2, intermediate_size=128)
    with pytest.raises(UserError, match="for another model"):
        apply_clip(other, path)
    with pytest.raises(UserError, match="group size 32"):
        apply_clip(copy.deepcopy(tiny_model), path, QuantSpec("int", 2, 64))
    (tmp_path / "bad.pt").write_text("not a cache")
    with pytest.raises(UserError, match="not a clip cache"):
        load_clip(tmp_path / "bad.pt")
