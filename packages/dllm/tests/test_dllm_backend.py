"""D-LLM as a registered core backend: get_backend("dllm") batches requests and keeps each row's answer."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize

from leanlm.core.errors import UserError
from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend
from leanlm.dllm import DLLM, DLLMConfig


@pytest.fixture(scope="module")
def dllm_dir(tokenizer, tmp_path_factory):
    """A saved D-LLM (random LoRA, routers skipping about half the blocks) on a saved tiny base folder."""
    from leanlm.core.testing.tiny_models import tiny_llama

    base = tiny_llama(tie_word_embeddings=False, seed=1)
    base_dir = tmp_path_factory.mktemp("base")
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    torch.manual_seed(0)
    dllm = randomize(DLLM(base, DLLMConfig(start_layer=1, reserve_initials=2, base_model=str(base_dir))))
    return dllm.save(tmp_path_factory.mktemp("dllm"))


def test_batched_backend_equals_each_request_decoded_alone(dllm_dir, tokenizer):
    from leanlm.core.generation.hf import end_token_ids
    from leanlm.core.sft import encode_prompt
    from leanlm.dllm.decode import generate as dllm_generate

    backend = get_backend("dllm", model=str(dllm_dir), batch_size=3)
    prompts = ["The capital of France is", "One, two,", "A long time ago in a galaxy far, far away there"]
    requests = [GenerationRequest(id=str(i), prompt=p) for i, p in enumerate(prompts)]
    results = generate(requests, backend, SamplingParams(max_new_tokens=10), progress=False)
    ratios = []
    for prompt, result in zip(prompts, results):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        alone = dllm_generate(
            backend.dllm,
            ids,
            max_new_tokens=10,
            eos_token_id=sorted(end_token_ids(backend.dllm.lm.generation_config, tokenizer)),
        )
        assert result.ok and result.token_ids == alone.tokens[0]  # left padding changed nothing
        ratios.append(result.meta["exec_ratio"])
    assert min(ratios) > 0.0 and max(ratios) < 1.0  # the routers really skipped blocks


def test_not_a_dllm_folder_is_refused(tmp_path):
    with pytest.raises(UserError, match="not a D-LLM folder"):
        get_backend("dllm", model=str(tmp_path))
