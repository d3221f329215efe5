"""BiTA as a registered core backend: get_backend("bita") and `leanlm serve --backend bita` stay lossless."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from leanlm.core.errors import UserError
from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend


@pytest.fixture(scope="module")
def adapter_dir(tiny_bita, tiny_model_dir, tmp_path_factory):
    """The untrained tiny adapter saved with a base pointer to the saved tiny_llama folder."""
    bita = copy.copy(tiny_bita)
    bita.config = dataclasses.replace(tiny_bita.config, base_model=str(tiny_model_dir))
    return bita.save_adapter(tmp_path_factory.mktemp("adapter"))


def _greedy(tiny_model, tokenizer, request: GenerationRequest, n: int) -> list[int]:
    """The base model's own greedy continuation (core's hf backend, one request alone): the reference."""
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=1)
    return generate([request], backend, SamplingParams(max_new_tokens=n), progress=False)[0].token_ids


def test_registered_backend_is_token_identical_to_greedy(adapter_dir, tiny_model, tokenizer):
    backend = get_backend("bita", model=str(adapter_dir), tree="1-1")
    requests = [
        GenerationRequest(id="p", prompt="The capital of France is"),
        GenerationRequest(id="c", messages=[{"role": "user", "content": "Name three colours."}]),
    ]
    results = generate(requests, backend, SamplingParams(max_new_tokens=20), progress=False)
    for request, result in zip(requests, results):
        assert result.ok and result.completion_tokens == len(result.token_ids) > 0
        assert result.token_ids == _greedy(tiny_model, tokenizer, request, 20)
        assert result.meta["forwards"] >= 1 and result.meta["mean_accepted"] >= 1.0


def test_base_folder_without_adapter_is_refused(tiny_model_dir):
    with pytest.raises(UserError, match="bita_config.json"):
        get_backend("bita", model=str(tiny_model_dir))


def test_bad_tree_is_refused_at_construction(adapter_dir):
    with pytest.raises(UserError):
        get_backend("bita", model=str(adapter_dir), tree="1,")


def test_served_with_the_openai_client(adapter_dir, tiny_model, tokenizer):
    from openai import OpenAI

    from leanlm.core.serving import Server, build_engine

    engine = build_engine(str(adapter_dir), backend="bita")
    with Server(engine, "bita-tiny") as server:
        client = OpenAI(base_url=server.openai_url, api_key="unused", max_retries=0, timeout=120)
        reply = client.completions.create(
            model="bita-tiny", prompt="The capital of France is", max_tokens=12, temperature=0
        )
        expected = _greedy(
            tiny_model, tokenizer, GenerationRequest(id="x", prompt="The capital of France is"), 12
        )
        assert reply.choices[0].text == tokenizer.decode(
            [t for t in expected if t != tokenizer.eos_token_id], skip_special_tokens=True
        )
        assert reply.usage.completion_tokens == len(expected)
        stream = client.chat.completions.create(
            model="bita-tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        chunks = list(stream)
        assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
