"""Model semantics: forced execution equals merged LoRA, skipped keys are ignored, reserved tokens run."""

import copy

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.dllm import DLLM, DLLMConfig
from leanlm.dllm.decode import KVCache, generate


def test_forced_execute_equals_base_with_merged_lora(routed):
    ids = torch.randint(0, 2000, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in row 1
    forced = routed(ids, mask, exec_override=torch.ones(1)).logits
    merged = copy.deepcopy(routed).merge_lora()
    hf = merged.lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert torch.allclose(forced[0], hf[0], atol=1e-9)
    assert torch.allclose(forced[1, 2:], hf[1, 2:], atol=1e-9)
    # LoRA matters here: the base model without it differs
    no_lora = routed.model.get_base_model()
    with routed.model.disable_adapter():
        base_logits = no_lora(input_ids=ids[:1]).logits
    assert not torch.allclose(base_logits, hf[:1], atol=1e-4)
    # routers that always execute give the same logits without any override
    always = copy.deepcopy(routed)
    with torch.no_grad():
        for r in always.routers.values():
            r.up.weight.zero_()
            r.up.bias.copy_(torch.tensor([-50.0, 50.0], dtype=r.up.bias.dtype))
    assert torch.allclose(always(ids, mask).logits[0], hf[0], atol=1e-9)


def _perturb_kv_hook(position: int):
    def hook(module, inputs, output):
        output = output.clone()
        output[:, position] += 3.0
        return output

    return hook


@pytest.mark.parametrize("skip", [True, False])
def test_skipped_token_leaves_no_key_at_that_layer(routed, skip):
    layer, j, t = 2, 4, 8
    ids = torch.randint(0, 2000, (1, t), generator=torch.Generator().manual_seed(5))
    override = torch.ones(1, t, routed.num_layers)
    if skip:
        override[0, j, layer] = 0
    clean = routed(ids, exec_override=override).logits
    attn = routed.layers[layer].self_attn
    handles = [
        attn.k_proj.register_forward_hook(_perturb_kv_hook(j)),
        attn.v_proj.register_forward_hook(_perturb_kv_hook(j)),
    ]
    try:
        dirty = routed(ids, exec_override=override).logits
    finally:
        for h in handles:
            h.remove()
    later = slice(j + 1, t)
    # token j's own output is its input at that layer when it skips; later tokens never read its K/V
    assert torch.allclose(clean[0, later], dirty[0, later], atol=1e-10) == skip
    assert torch.allclose(clean[0, :j], dirty[0, :j], atol=1e-10)


def test_cache_slot_invalid_after_skip(routed):
    ids = torch.randint(0, 2000, (1, 10), generator=torch.Generator().manual_seed(7))
    out = routed(ids)
    cache = KVCache()
    generate(routed, ids, max_new_tokens=1, cache=cache)
    execs = out.execs[0] > 0.5  # [T, L]
    assert (~execs).any(), "the random routers should skip something"
    assert torch.equal(cache.valid[:, 0, :10], execs.T)


def test_reserved_initial_tokens_always_execute(untied_base):
    d = DLLM(copy.deepcopy(untied_base), DLLMConfig(start_layer=1, reserve_initials=3)).double().eval()
    with torch.no_grad():
        for r in d.routers.values():
            r.up.bias.copy_(torch.tensor([50.0, -50.0], dtype=r.up.bias.dtype))  # always skip
    ids = torch.randint(0, 2000, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    execs = d(ids, mask).execs
    assert execs[0, :3].eq(1).all() and execs[0, 3:, 1:].eq(0).all() and execs[0, :, 0].eq(1).all()
    assert execs[1, 2:5].eq(1).all() and execs[1, 5:, 1:].eq(0).all()  # counted from the first real token
    # in decode too: a 1-token prompt, the next two positions are still reserved
    cache = KVCache()
    out = generate(d, ids[:1, :1], max_new_tokens=4, cache=cache)
    assert cache.valid[:, 0, :3].all() and not cache.valid[1:, 0, 3:5].any()
    assert out.stats[0]["exec_ratio"] == pytest.approx((3 * 4 + 1 * 1) / (4 * 4))


def test_bad_config_is_a_user_error(tiny_model):
    for target in (0.0, -0.1, 1.5):
        with pytest.raises(UserError, match="target"):
            DLLMConfig(target=target).validate()
    for ramp in (0.0, 1.2):
        with pytest.raises(UserError, match="lambda_ramp"):
            DLLMConfig(lambda_ramp=ramp).validate()
    with pytest.raises(UserError, match="beyond the model's depth"):
        DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=4))


def test_save_load_round_trip(routed, untied_base, tmp_path):
    ids = torch.randint(0, 2000, (1, 7))
    want = routed(ids).logits
    folder = routed.save(tmp_path / "d")
    assert {p.name for p in folder.iterdir()} == {
        "dllm_config.json",
        "routers.safetensors",
        "lora.safetensors",
        "adapter_config.json",  # peft's adapter files (test_peft_adapter.py)
        "adapter_model.safetensors",
    }
    loaded = DLLM.load(folder, copy.deepcopy(untied_base))
    assert loaded.lora_merged
    assert torch.allclose(loaded(ids).logits, want, atol=1e-9)
    with pytest.raises(UserError, match="not a D-LLM folder"):
        DLLM.load(tmp_path, copy.deepcopy(untied_base))


def test_reported_exec_ratio_counts_only_routed_real_tokens(routed):
    """With labels, ``exec_ratio`` averages over real tokens past the reserved ones (what the ratio loss sees)."""
    ids = torch.randint(0, 2000, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in row 1
    labels = ids.clone()
    out = routed(ids, mask, labels=labels)
    pos = mask.cumsum(-1) - 1
    counted = mask.bool() & (pos >= routed.config.reserve_initials)
    expected = float((out.execs.mean(-1) * counted).sum() / counted.sum())
    assert out.exec_ratio == pytest.approx(expected)
    everything = float(out.execs.mean())  # padding and reserved tokens would pull it up (they all execute)
    assert 0.0 < out.exec_ratio < everything
