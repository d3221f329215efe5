"""Packed folders through ``load_model``: greedy output equals the fake-quantized model, int8 heads, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.kernels import int4pack, lowbit
from leanlm.core.models import load_model
from leanlm.core.packed import (
    Int8Embedding,
    Int8Linear,
    PackedLinear,
    gptq_quantization_config,
    is_packed_folder,
    quantize_lm_head,
    save_packed,
)

BITS, GROUP = 2, 32


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def _fake_and_packed(model: nn.Module, bits: int, g: int) -> tuple[nn.Module, nn.Module]:
    """(fake-quantized copy: dequantized fp32 weights, packed copy: PackedLinear with fp32 scales)."""
    fake, packed = copy.deepcopy(model), copy.deepcopy(model)
    for name, lin in list(model.named_modules()):
        if not isinstance(lin, nn.Linear) or name == "lm_head":
            continue
        q = lowbit.quantize_asym(lin.weight.detach(), bits, g)
        fake.get_submodule(name).weight.data = lowbit.dequantize(q.codes, q.scales, q.zeros, g)
        _swap(
            packed,
            name,
            PackedLinear.from_codes(q.codes, q.scales, q.zeros, bits, g, scale_dtype=torch.float32),
        )
    return fake, packed


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory, tiny_model, tokenizer):
    fake, packed = _fake_and_packed(tiny_model, BITS, GROUP)
    folder = tmp_path_factory.mktemp("packed") / "int2"
    save_packed(packed, folder, gptq_quantization_config(BITS, GROUP, scale_dtype=torch.float32), tokenizer)
    return folder, fake


PROMPTS = ["Once upon a time", "The capital of France is", "def add(a, b):", "1, 2, 3,"]


def _greedy(model: nn.Module, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=10,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[0, ids.shape[1] :].tolist()


def test_load_model_opens_packed_folder_and_greedy_equals_fake_quantized(packed_dir, tokenizer):
    folder, fake = packed_dir
    assert is_packed_folder(folder)
    model = load_model(str(folder), device="cpu")
    layer = model.model.layers[0].mlp.down_proj
    assert isinstance(layer, PackedLinear) and model.leanlm_packed["bits"] == BITS
    ids = tokenizer("Hello there, general", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake(ids).logits, rtol=1e-5, atol=1e-5)
    for prompt in PROMPTS:
        assert _greedy(model, tokenizer, prompt) == _greedy(fake, tokenizer, prompt), prompt


@pytest.mark.skipif(not int4pack.cpu_kernel_available(), reason="no CPU int4 kernel")
def test_packed_folder_in_bf16_runs_the_int4_kernel(packed_dir, tokenizer):
    folder, fake = packed_dir
    model = load_model(str(folder), device="cpu", dtype="bf16")
    x = torch.zeros(1, 64, dtype=torch.bfloat16)
    assert model.model.layers[0].self_attn.q_proj.kernel_for(x) == "int4pack"
    ids = tokenizer("Hello there, general", return_tensors="pt").input_ids
    with torch.no_grad():
        got, ref = model(ids).logits.float(), fake(ids).logits
    # bf16 activations through 4 layers: close to the fp32 model, not equal
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8


def test_int8_head_saved_and_loaded(tmp_path, tiny_model, tokenizer):
    _, packed = _fake_and_packed(tiny_model, 4, 64)
    quantize_lm_head(packed, "int8")
    assert isinstance(packed.get_input_embeddings(), Int8Embedding)  # tiny_llama ties its embedding
    save_packed(
        packed,
        tmp_path / "p",
        gptq_quantization_config(4, 64, scale_dtype=torch.float32, lm_head="int8"),
        tokenizer,
    )
    loaded = load_model(str(tmp_path / "p"), device="cpu")
    assert isinstance(loaded.lm_head, Int8Linear) and isinstance(loaded.get_input_embeddings(), Int8Embedding)
    torch.testing.assert_close(loaded.lm_head.weight_int8, packed.lm_head.weight_int8, rtol=0, atol=0)
    ids = tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, packed(ids).logits, rtol=1e-5, atol=1e-5)
    # a float head can also be made int8 at load
    folder = tmp_path / "f"
    _, p2 = _fake_and_packed(tiny_model, 4, 64)
    save_packed(p2, folder, gptq_quantization_config(4, 64), tokenizer)
    assert isinstance(load_model(str(folder), device="cpu", lm_head="int8").lm_head, Int8Linear)
    with pytest.raises(UserError, match="lm-head"):
        load_model(str(folder), device="cpu", lm_head="int3")


def test_missing_or_broken_packed_folder_is_one_line_error(tmp_path, packed_dir):
    with pytest.raises(UserError):
        load_model(str(tmp_path / "nope"), device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((packed_dir[0] / "config.json").read_text())
    with pytest.raises(UserError, match="model.safetensors is missing"):
        load_model(str(broken), device="cpu")
