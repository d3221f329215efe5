"""leanlm serve against real clients: the official openai client, httpx and curl, on a loopback port."""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import subprocess
import time

import httpx
import pytest

from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend
from leanlm.core.serving import Server, build_engine
from leanlm.core.serving.app import ServerLimits

NAME = "tiny"
KEY = "sk-test"


@pytest.fixture(scope="module")
def server(tiny_model, tokenizer):
    engine = build_engine(tiny_model, tokenizer, max_batch=8, max_queue=256)
    with Server(
        engine, NAME, ServerLimits(max_prompt_tokens=64, max_tokens=48, default_max_tokens=16), KEY
    ) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.openai_url, api_key=KEY, max_retries=0, timeout=60)


def _in_process(tiny_model, tokenizer, request: GenerationRequest, max_tokens: int) -> str:
    """What the same model answers in process, alone, greedy: the reference."""
    backend = get_backend("hf", model=tiny_model, tokenizer=tokenizer, batch_size=1)
    return generate([request], backend, SamplingParams(max_new_tokens=max_tokens), progress=False)[0].text


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [NAME]


def test_chat_greedy_equals_in_process_decoding(client, tiny_model, tokenizer):
    messages = [{"role": "user", "content": "Name three colours."}]
    reply = client.chat.completions.create(model=NAME, messages=messages, max_tokens=12, temperature=0)
    expected = _in_process(tiny_model, tokenizer, GenerationRequest(id="a", messages=messages), 12)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason in {"length", "stop"} and reply.usage.completion_tokens <= 12
    assert reply.usage.prompt_tokens == len(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    )


def test_completion_stream_equals_the_whole_answer(client, tiny_model, tokenizer):
    whole = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0
    )
    pieces, reasons = [], []
    for chunk in client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=10, temperature=0, stream=True
    ):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == whole.choices[0].text
    assert whole.choices[0].text == _in_process(
        tiny_model, tokenizer, GenerationRequest(id="b", prompt="The capital of France is"), 10
    )
    assert reasons[-1] == whole.choices[0].finish_reason and len(pieces) > 2  # token by token, not one blob


def test_chat_stream_deltas(client):
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    whole = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    assert text == whole.choices[0].message.content and chunks[-1].choices[0].finish_reason is not None


def test_sampling_is_seeded(client):
    ask = dict(model=NAME, prompt="Once upon a time", max_tokens=10, temperature=1.0, top_p=0.9)
    a = client.completions.create(seed=7, **ask).choices[0].text
    assert client.completions.create(seed=7, **ask).choices[0].text == a


def test_stop_string_cuts_the_answer(client):
    whole = (
        client.completions.create(model=NAME, prompt="Count:", max_tokens=20, temperature=0).choices[0].text
    )
    stop = whole[len(whole) // 2 : len(whole) // 2 + 2]
    if not stop.strip():
        pytest.skip("the answer has no usable stop string")
    cut = client.completions.create(model=NAME, prompt="Count:", max_tokens=20, temperature=0, stop=[stop])
    assert cut.choices[0].text == whole[: whole.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=NAME, prompt="Count:", max_tokens=20, temperature=0, stop=[stop], stream=True
        )
    )
    assert streamed == cut.choices[0].text  # no part of the stop string is ever streamed


def _post(server, path: str, body, key: str | None = KEY, raw: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if raw else json.dumps(body)
    return httpx.post(
        server.url + path,
        content=content,
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "body, status, says",
    [
        ("{not json", 400, "not valid JSON"),
        ({"model": NAME}, 400, "prompt"),
        ({"model": "gpt-9", "prompt": "x"}, 404, "not served here"),
        ({"model": NAME, "prompt": "word " * 200}, 400, "at most 64"),
        ({"model": NAME, "prompt": "x", "max_tokens": 4096}, 400, "over this server's limit of 48"),
        ({"model": NAME, "prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"model": NAME, "prompt": "x", "n": 3}, 400, "n"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, body, status, says):
    r = _post(server, "/v1/completions", body, raw=isinstance(body, str))
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_api_key_required(server):
    assert _post(server, "/v1/completions", {"model": NAME, "prompt": "x"}, key=None).status_code == 401
    assert _post(server, "/v1/completions", {"model": NAME, "prompt": "x"}, key="wrong").status_code == 401
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # health needs no key


def test_client_disconnect_mid_stream_stops_decoding(server, tiny_model):
    engine = server.engine
    # 50 ms per decoding step: 48 tokens take 2.4 s, longer than the waits below, so on any machine
    # load an engine that ignored the disconnect would still be decoding when the test looks
    slow = tiny_model.register_forward_pre_hook(lambda *_: time.sleep(0.05))
    body = {
        "model": NAME,
        "prompt": "Tell me a long story",
        "max_tokens": 48,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        server.openai_url + "/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {KEY}"},
    ) as r:
        before = engine.tokens_generated
        next(r.iter_lines())  # the first chunk arrived; then the client goes away
    try:
        time.sleep(1.5)
        spent = engine.tokens_generated - before
        time.sleep(0.5)
    finally:
        slow.remove()
    assert engine.tokens_generated - before == spent < 48  # stopped, well before max_tokens
    assert (
        _post(server, "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2}).status_code == 200
    )


def test_64_concurrent_requests_nothing_lost(server, client):
    prompts = [f"Question number {i}:" for i in range(64)]
    alone = {
        p: client.completions.create(model=NAME, prompt=p, max_tokens=6, temperature=0).choices[0].text
        for p in prompts[:4]
    }

    def ask(p: str) -> tuple[int, str]:
        r = _post(server, "/v1/completions", {"model": NAME, "prompt": p, "max_tokens": 6, "temperature": 0})
        return r.status_code, r.json()["choices"][0]["text"] if r.status_code == 200 else r.text

    with cf.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(ask, prompts))
    assert all(status in (200, 503) for status, _ in results)
    assert sum(status == 200 for status, _ in results) == 64  # the queue (256) holds them all
    for p, (_, text) in zip(prompts, results):
        if p in alone:
            assert text == alone[p]  # batched with others, greedy output is unchanged
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "waiting": 0}


def test_full_queue_is_503_with_retry_after(tiny_model, tokenizer):
    engine = build_engine(tiny_model, tokenizer, max_batch=1, max_queue=1)
    with Server(engine, NAME, ServerLimits(max_tokens=48)) as s:
        body = {"model": NAME, "prompt": "x", "max_tokens": 40, "temperature": 0}
        with cf.ThreadPoolExecutor(8) as pool:
            codes = [
                r.status_code
                for r in pool.map(lambda _: _post(s, "/v1/completions", body, key=None), range(8))
            ]
        busy = [c for c in codes if c == 503]
        assert busy and set(codes) <= {200, 503} and 200 in codes


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl(server):
    body = json.dumps({"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            f"Authorization: Bearer {KEY}",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            server.openai_url + "/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    reply = json.loads(out.stdout)
    assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] <= 4


def test_openai_backend_through_the_server(server, tiny_model, tokenizer):
    """core's own openai backend (what Lion and bita-gen-outputs use) talks to leanlm serve."""
    backend = get_backend("openai", base_url=server.openai_url, api_key=KEY, model=NAME, concurrency=4)
    reqs = [GenerationRequest(id=str(i), prompt=f"Item {i}:") for i in range(6)]
    results = generate(reqs, backend, SamplingParams(max_new_tokens=5), progress=False)
    assert all(r.ok for r in results)
    assert results[0].text == _in_process(tiny_model, tokenizer, reqs[0], 5)


class EchoBackend:
    """A stand-in for a method's registered backend: answers the prompt reversed (no model)."""

    name = "echo"

    def __init__(self, model: str = "default"):
        from leanlm.core.models import load_tokenizer

        self.tokenizer = load_tokenizer("default")
        self.model_name = model

    def preflight(self) -> None:
        pass

    def run(self, requests, params, on_result):
        from leanlm.core.generation.types import GenerationResult

        for r in requests:
            text = (r.prompt or r.messages[-1]["content"])[::-1]
            on_result(GenerationResult(id=r.id, text=text, completion_tokens=3))

    def close(self) -> None:
        pass


def test_registered_backend_is_found_and_served(monkeypatch):
    from importlib.metadata import EntryPoint

    import leanlm.core.generation as generation
    from leanlm.core.errors import UserError

    ep = EntryPoint(name="echo", value="test_serve:EchoBackend", group=generation.BACKEND_GROUP)
    monkeypatch.setattr(generation, "registered_backends", lambda: {"echo": ep})
    assert isinstance(get_backend("echo", model="m"), EchoBackend)
    with pytest.raises(UserError, match="choose one of hf, openai, tgi, vllm, echo"):
        get_backend("nope")
    engine = build_engine("m", backend="echo")
    with Server(engine, "echo-model") as s:
        r = httpx.post(
            s.openai_url + "/completions", json={"model": "echo-model", "prompt": "abc", "max_tokens": 5}
        )
        assert r.json()["choices"][0]["text"] == "cba" and r.json()["usage"]["completion_tokens"] == 3
        with httpx.stream(
            "POST",
            s.openai_url + "/completions",
            json={"model": "echo-model", "prompt": "xyz", "stream": True},
        ) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["choices"][0]["text"] == "zyx"
