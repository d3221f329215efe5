import copy
import json

import pytest
import torch

from leanlm.dllm import DLLM, DLLMConfig

pytest_plugins = ["leanlm.core.testing.fixtures"]


def randomize(dllm: DLLM, seed: int = 0, router_scale: float = 4.0) -> DLLM:
    """Non-zero LoRA B and routers that skip roughly half of the (token, layer) pairs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in dllm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
        for r in dllm.routers.values():
            r.up.bias.zero_()
            r.up.weight.mul_(router_scale)
    return dllm


@pytest.fixture
def untied_base():
    """A tiny random LLaMA with an untied head (tied random ones tend to repeat the input token)."""
    from leanlm.core.testing.tiny_models import tiny_llama

    return tiny_llama(tie_word_embeddings=False, seed=1).double()


@pytest.fixture
def routed(untied_base) -> DLLM:
    """float64 D-LLM (start_layer 1, 2 reserved tokens) with random LoRA and ~50% skipping routers."""
    torch.manual_seed(0)
    d = DLLM(copy.deepcopy(untied_base), DLLMConfig(start_layer=1, reserve_initials=2)).double()
    return randomize(d).eval()


@pytest.fixture(scope="module")
def piqa_rows(tmp_path_factory):
    """A six-row PIQA-shaped local dataset folder (train/test/prompt) for the console scripts."""
    folder = tmp_path_factory.mktemp("piqa")
    rows = [
        {"goal": f"open jar {i}", "sol1": "twist the lid", "sol2": "eat the lid", "answer": 1}
        for i in range(6)
    ]
    for split, part in (("train", rows), ("test", rows[:2])):
        (folder / f"{split}.json").write_text(json.dumps(part))
    (folder / "prompt.json").write_text(json.dumps({"prompt": "Goal: {goal}\n1) {sol1}\n2) {sol2}\nAnswer:"}))
    return folder
