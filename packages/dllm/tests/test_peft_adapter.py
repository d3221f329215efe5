"""A saved D-LLM folder is also a peft LoRA adapter: plain peft loads it and gives D-LLM's logits with
every block executed, and the base with ``W + (alpha / r) B A`` merged by hand."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import randomize
from safetensors.torch import load_file

from leanlm.dllm import DLLM, DLLMConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(base folder, D-LLM folder, D-LLM logits with all blocks executed, ids), float64."""
    from transformers import AutoModelForCausalLM

    from leanlm.core.testing.tiny_models import tiny_llama

    base_dir = tmp_path_factory.mktemp("base")
    tiny_llama(tie_word_embeddings=False, seed=1).save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    dllm = randomize(DLLM(base, DLLMConfig(start_layer=1, reserve_initials=2)).double()).eval()
    ids = torch.randint(5, 2000, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = dllm(ids, exec_override=1.0).logits
        assert (dllm(ids).execs < 1).any()  # the routers do skip: executing all blocks is a real choice
    return base_dir, dllm.save(tmp_path_factory.mktemp("dllm")), want, ids


def test_adapter_config_names_the_base_and_the_lora(saved):
    base_dir, folder, _, _ = saved
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert config["base_model_name_or_path"] == str(base_dir.resolve())
    assert (config["r"], config["lora_alpha"]) == (8, 8.0)
    assert sorted(config["target_modules"]) == ["k_proj", "q_proj", "v_proj"]
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 4 * 3 * 2  # 4 layers x q/k/v x A/B, nothing else (no router, no base weight)


def test_peft_loads_the_folder_with_d_llm_logits(saved):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, folder, want, ids = saved
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float64)
    with torch.no_grad():
        plain = base(ids).logits
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), folder).eval()
        got = peft_model(ids).logits
        auto = AutoPeftModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()(ids).logits
    assert (got - plain).abs().max() > 1e-3  # the adapter changes the output
    assert torch.allclose(got, want, atol=1e-9, rtol=0)
    assert torch.allclose(auto, want, atol=1e-9, rtol=0)  # the base found through adapter_config.json

    # an independent reference: D-LLM's own LoRA file merged into the base's weights by hand
    lora = load_file(str(folder / "lora.safetensors"))
    scale = 8.0 / 8
    with torch.no_grad():
        for name, module in base.named_modules():
            a = lora.get(f"lm.{name}.lora_A.default.weight")
            if a is not None:
                module.weight += scale * lora[f"lm.{name}.lora_B.default.weight"] @ a
        merged = base(ids).logits
    assert torch.allclose(merged, want, atol=1e-9, rtol=0)


def test_no_adapter_files_without_lora(tmp_path):
    from leanlm.core.testing.tiny_models import tiny_llama

    dllm = DLLM(tiny_llama(), DLLMConfig(lora_rank=0))
    names = {p.name for p in dllm.save(tmp_path / "d").iterdir()}
    assert "adapter_config.json" not in names and "dllm_config.json" in names
