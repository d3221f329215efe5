"""Clipping search on every tiny architecture: per-layer inputs as in a plain forward, and Phi-3's
fused qkv_proj/gate_up_proj equal to the search on the same weights as separate q/k/v and gate/up
layers (a Llama with identical weights is the reference)."""

from __future__ import annotations

import logging

import pytest
import torch

from leanlm.bitdistiller.clip import _HessianHook, apply_clip, fused_qkv_split, run_clip_search, search_clip
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_model


def _llama_twin(phi3):
    """A LlamaForCausalLM computing exactly what ``phi3`` computes (fused weights split apart)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = phi3.config
    cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters=dict(c.rope_parameters),
        tie_word_embeddings=False,
    )
    llama = LlamaForCausalLM(cfg).eval()
    q = c.num_attention_heads * (c.hidden_size // c.num_attention_heads)
    k = c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    state = {}
    for name, w in phi3.state_dict().items():
        if "qkv_proj" in name:
            for part, rows in zip(("q_proj", "k_proj", "v_proj"), w.split([q, k, k]), strict=True):
                state[name.replace("qkv_proj", part)] = rows
        elif "gate_up_proj" in name:
            for part, rows in zip(("gate_proj", "up_proj"), w.chunk(2), strict=True):
                state[name.replace("gate_up_proj", part)] = rows
        else:
            state[name] = w
    llama.load_state_dict(state, strict=True)
    return llama, q + k


def test_fused_search_equals_separate_layers(caplog):
    phi3 = tiny_model("phi3", num_layers=2)
    phi3.config.sliding_window = None  # the Llama twin has no window
    llama, qk_rows = _llama_twin(phi3)
    blocks = torch.randint(5, 2000, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(phi3(blocks).logits, llama(blocks).logits, atol=1e-5)  # the twin really is one
    spec = QuantSpec("int", 2, 32)
    with caplog.at_level(logging.WARNING, logger="leanlm.bitdistiller.clip"):
        fused = {n: (mx, mn) for n, mx, mn in run_clip_search(phi3, blocks, spec, n_grid=10)}
    separate = {n: (mx, mn) for n, mx, mn in run_clip_search(llama, blocks, spec, n_grid=10)}
    assert not any(("q_proj" in n or "k_proj" in n) for n in separate)  # the rule being matched
    assert sum("fuses q/k/v" in r.getMessage() for r in caplog.records) == 1
    for li in range(2):
        attn, mlp = f"model.layers.{li}.self_attn", f"model.layers.{li}.mlp"
        mx, mn = fused[f"{attn}.qkv_proj"]
        v_mx, v_mn = separate[f"{attn}.v_proj"]
        torch.testing.assert_close(mx[qk_rows:], v_mx, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mn[qk_rows:], v_mn, rtol=1e-5, atol=1e-6)
        w = phi3.get_submodule(f"{attn}.qkv_proj").weight[:qk_rows].reshape(qk_rows, -1, 32)
        assert torch.equal(mx[:qk_rows], w.amax(-1, keepdim=True)) and torch.equal(
            mn[:qk_rows], w.amin(-1, keepdim=True)
        )
        g_mx, g_mn = fused[f"{mlp}.gate_up_proj"]
        torch.testing.assert_close(
            g_mx, torch.cat([separate[f"{mlp}.gate_proj"][0], separate[f"{mlp}.up_proj"][0]])
        )
        torch.testing.assert_close(
            g_mn, torch.cat([separate[f"{mlp}.gate_proj"][1], separate[f"{mlp}.up_proj"][1]])
        )
    # applying the cache leaves q and k untouched and clips v
    before = phi3.model.layers[0].self_attn.qkv_proj.weight.detach().clone()
    apply_clip(phi3, {"clip": [(n, mx, mn) for n, (mx, mn) in fused.items()]})
    after = phi3.model.layers[0].self_attn.qkv_proj.weight
    assert torch.equal(after[:qk_rows], before[:qk_rows]) and not torch.equal(
        after[qk_rows:], before[qk_rows:]
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_search_equals_hessians_of_a_plain_forward(arch):
    """Each layer's Hessians come from the inputs it sees in the model's own forward pass (with its
    own mask: sliding-window and full layers alternate in Gemma2 and this Qwen2), so the search
    equals searching on hooks of one plain HF forward; q/k are skipped, fused qkv split."""
    model = tiny_model(arch, num_layers=2)
    blocks = torch.randint(5, 2000, (2, 16), generator=torch.Generator().manual_seed(1))
    spec = QuantSpec("int", 2, 32)
    got = {n: (mx, mn) for n, mx, mn in run_clip_search(model, blocks, spec, n_grid=6)}
    linears = {n: m for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)}
    keep = {n: m for n, m in linears.items() if not n.rsplit(".", 1)[-1].startswith(("q_", "k_"))}
    hooks = {n: _HessianHook(32) for n in keep}
    handles = [m.register_forward_hook(hooks[n]) for n, m in keep.items()]
    with torch.no_grad():
        model(input_ids=blocks, use_cache=False)
    for hd in handles:
        hd.remove()
    assert set(got) == {f"model.layers.{n}" for n in keep}
    for n, m in keep.items():
        first = fused_qkv_split(model, m) if n.endswith("qkv_proj") else 0
        top = m.weight[:first].reshape(first, m.in_features // 32, 32)
        mx, mn = search_clip(m.weight[first:].detach(), hooks[n].value(), spec, n_grid=6)
        want_mx, want_mn = (
            torch.cat([top.amax(-1, keepdim=True), mx]),
            torch.cat([top.amin(-1, keepdim=True), mn]),
        )
        torch.testing.assert_close(got[f"model.layers.{n}"][0], want_mx, rtol=1e-5, atol=1e-6, msg=n)
        torch.testing.assert_close(got[f"model.layers.{n}"][1], want_mn, rtol=1e-5, atol=1e-6, msg=n)
