"""The ``hf`` backend against ``model.generate`` and the runner's resume rules."""

from __future__ import annotations

import json

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.core.generation import GenerationRequest, GenerationResult, SamplingParams, generate, get_backend
from leanlm.core.generation.base import Backend


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = [
    "Hello there",
    "The quick brown fox jumps over the lazy dog and then",
    "A",
    "Once upon a time, in a land far away, there lived",
    "1 2 3",
]


def reference(model, tokenizer, prompt_ids: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
    )
    return out[0, ids.shape[1] :].tolist()


def test_greedy_batched_equals_model_generate(tiny_model, tokenizer):
    backend = get_backend(
        "hf", model=tiny_model, tokenizer=tokenizer, batch_size=3
    )  # 5 prompts: batches of 3 + 2
    reqs = [GenerationRequest(id=f"p{i}", prompt=p) for i, p in enumerate(PROMPTS)]
    results = generate(reqs, backend, SamplingParams(max_new_tokens=10), progress=False)
    assert [r.id for r in results] == [
        r.id for r in reqs
    ]  # request order, although batches are length-sorted
    for prompt, res in zip(PROMPTS, results):
        ids = tokenizer(prompt)["input_ids"]
        ref = reference(tiny_model, tokenizer, ids, 10)
        assert res.ok and res.token_ids == ref
        assert res.text == tokenizer.decode(ref, skip_special_tokens=True)
        assert res.prompt_tokens == len(ids) and res.completion_tokens == len(ref)
    assert backend.stats.requests == 5 and backend.stats.completion_tokens == sum(
        r.completion_tokens for r in results
    )


@pytest.mark.slow
def test_greedy_embedded_model_batched_equals_single(embedded_model, tokenizer):
    backend = get_backend("hf", model=embedded_model, tokenizer=tokenizer, batch_size=2)
    prompts = ["The capital of France is", "Write one word that rhymes with cat:"]
    results = generate(
        [{"id": i, "prompt": p} for i, p in enumerate(prompts)], backend, SamplingParams(8), progress=False
    )
    for prompt, res in zip(prompts, results):
        assert res.token_ids == reference(embedded_model, tokenizer, tokenizer(prompt)["input_ids"], 8)


def test_chat_messages_use_chat_template(tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=2)
    messages = [{"role": "user", "content": "Name a colour."}]
    res = generate(
        [GenerationRequest(id="c", messages=messages)], backend, SamplingParams(6), progress=False
    )[0]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in rendered
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert res.prompt_tokens == len(ids)
    assert res.token_ids == reference(tiny_model, tokenizer, ids, 6)


def test_stop_string_cuts_text(tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer)
    req = [GenerationRequest(id="s", prompt=PROMPTS[1])]
    full = generate(req, backend, SamplingParams(10), progress=False)[0]
    words = full.text.split()
    assert len(words) >= 3
    stop = " " + words[1]  # the second generated word: the text must end right before it
    cut = generate(req, backend, SamplingParams(10, stop=[stop]), progress=False)[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert stop not in cut.text
    assert cut.completion_tokens < full.completion_tokens  # generation itself stopped early


def test_sampling_is_seeded(tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=2)
    reqs = [GenerationRequest(id=str(i), prompt=p) for i, p in enumerate(PROMPTS[:2])]

    def texts(seed: int) -> list[list[int]]:
        params = SamplingParams(max_new_tokens=12, temperature=1.5, seed=seed)
        return [r.token_ids for r in generate(reqs, backend, params, progress=False)]

    first = texts(1)
    assert texts(1) == first
    assert texts(2) != first
    greedy = [r.token_ids for r in generate(reqs, backend, SamplingParams(12), progress=False)]
    assert first != greedy


def test_resume_skips_finished_ids(tiny_model, tokenizer, tmp_path):
    out = tmp_path / "gen.jsonl"
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=4)
    reqs = [GenerationRequest(id=f"p{i}", prompt=p, meta={"n": i}) for i, p in enumerate(PROMPTS)]
    first = generate(reqs[:2], backend, SamplingParams(5), output=out, progress=False)
    assert backend.stats.requests == 2
    again = generate(reqs, backend, SamplingParams(5), output=out, progress=False)
    assert backend.stats.requests == 5  # only the 3 new ids were generated
    assert [r.id for r in again] == [r.id for r in reqs]
    assert again[:2] == first and again[1].meta == {"n": 1}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(r.id for r in reqs)  # one line per id, no repeats


class FlakyBackend(Backend):
    """Fails the ids in ``bad`` once, then answers them; records every id it is asked for."""

    name = "flaky"

    def __init__(self, bad: set[str]):
        super().__init__()
        self.bad, self.asked = set(bad), []

    def run(self, requests, params, on_result):
        for r in requests:
            self.asked.append(r.id)
            if r.id in self.bad:
                self.bad.discard(r.id)
                on_result(GenerationResult.failure(r, "boom"))
            else:
                on_result(GenerationResult(id=r.id, text=r.prompt.upper()))


def test_failures_are_recorded_then_retried(tmp_path):
    out = tmp_path / "gen.jsonl"
    reqs = [{"id": str(i), "prompt": f"x{i}"} for i in range(4)]
    backend = FlakyBackend({"1", "3"})
    first = generate(reqs, backend, output=out, progress=False, max_failed_fraction=None)
    assert [r.ok for r in first] == [True, False, True, False]
    assert first[1].error == "boom"
    second = generate(reqs, backend, output=out, progress=False, max_failed_fraction=None)
    assert backend.asked == ["0", "1", "2", "3", "1", "3"]  # only the failed ids were asked again
    assert all(r.ok for r in second) and second[3].text == "X3"
    third = generate(reqs, backend, output=out, progress=False, max_failed_fraction=None)
    assert backend.asked[6:] == [] and third == second


def test_bad_requests_raise_user_error(tiny_model, tokenizer):
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer)
    with pytest.raises(UserError, match="duplicate request id"):
        generate([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], backend, progress=False)
    with pytest.raises(UserError, match="exactly one of"):
        GenerationRequest(id="b")
    with pytest.raises(UserError, match="unknown generation backend"):
        get_backend("nope")
    with pytest.raises(UserError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


@pytest.mark.parametrize("arch, bos_count", [("llama3", 1), ("gemma", 1), ("qwen2", None)])
def test_prompt_ids_keep_one_bos(arch, bos_count):
    """A chat, or the same chat rendered to text and sent as a prompt, gives the same ids with one BOS."""
    from leanlm.core.generation.hf import prompt_ids
    from leanlm.core.testing.tiny_models import tiny_tokenizer

    tok = tiny_tokenizer(arch)
    messages = [{"role": "user", "content": "hi"}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    as_chat = prompt_ids(tok, GenerationRequest(id="c", messages=messages))
    as_text = prompt_ids(tok, GenerationRequest(id="p", prompt=rendered))
    assert as_text == as_chat
    if bos_count is not None:  # (Qwen's "BOS" is <|im_start|>, which opens every turn: not counted)
        assert as_chat[0] == tok.bos_token_id and as_chat.count(tok.bos_token_id) == bos_count


def test_end_token_ids_union_of_config_list_and_tokenizer_and_until_end():
    from types import SimpleNamespace

    from leanlm.core.generation.hf import end_token_ids, until_end

    tok = SimpleNamespace(eos_token_id=9)
    assert end_token_ids(SimpleNamespace(eos_token_id=[5, 7]), tok) == {5, 7, 9}  # Llama-3 style list
    assert end_token_ids(SimpleNamespace(eos_token_id=None), tok) == {9}
    assert until_end([1, 2, 7, 0, 0], {5, 7, 9}) == [1, 2, 7] and until_end([1, 2], {9}) == [1, 2]
