"""The ``openai`` and ``tgi`` backends against the loopback fake server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import time

import pytest

from leanlm.core.errors import UserError
from leanlm.core.generation import (
    GenerationRequest,
    IncompleteGeneration,
    SamplingParams,
    generate,
    get_backend,
)
from leanlm.core.generation.remote import normalize_url
from leanlm.core.generation.vllm_backend import vllm_available
from leanlm.core.testing.fake_servers import FakeServer

FAST = {"backoff_base": 0.01, "backoff_max": 0.5, "timeout": 0.5}  # tests must not sleep for real backoffs


def make(kind: str, server: FakeServer, **options):
    opts = {**FAST, **options}
    if kind == "openai":
        return get_backend("openai", base_url=server.openai_url, api_key="test-key", model="fake", **opts)
    return get_backend("tgi", base_url=server.url, **opts)


def reqs(n: int, chat_every: int = 3) -> list[GenerationRequest]:
    """Prompts q0..q{n-1}; every third one is a chat, so both routes of each protocol are exercised."""
    out = []
    for i in range(n):
        if i % chat_every == 0:
            out.append(
                GenerationRequest(id=f"r{i}", messages=[{"role": "user", "content": f"q{i}"}], meta={"i": i})
            )
        else:
            out.append(GenerationRequest(id=f"r{i}", prompt=f"q{i}", meta={"i": i}))
    return out


def responder(body: dict) -> str:
    key = body.get("prompt") or body.get("inputs") or body["messages"][-1]["content"]
    return f"answer to {key} is {key.upper()}"


BACKENDS = ["openai", "tgi"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_faults_are_retried_until_answered(kind, tmp_path):
    faults = {
        "q1": ["429", "500"],
        "q2": ["malformed"],
        "q3": ["timeout:2"],
        "q4": ["503", "429"],
        "q6": ["500"],
    }
    with FakeServer(responder, faults=faults) as server:
        backend = make(kind, server, concurrency=4, max_retries=3)
        results = generate(reqs(8), backend, SamplingParams(max_new_tokens=7), output=tmp_path / "o.jsonl")
        assert [r.id for r in results] == [f"r{i}" for i in range(8)]
        for i, r in enumerate(results):
            assert r.ok, r.error
            meta = {k: v for k, v in r.meta.items() if k != "finish_reason"}  # openai adds it
            assert r.text == f"answer to q{i} is Q{i}" and meta == {"i": i}
            assert r.completion_tokens == 5  # the fake server counts words
        assert backend.stats.retries == 7 and backend.stats.failed == 0
        assert backend.stats.requests == len(server.posts()) == 15
        assert backend.stats.completion_tokens == 40
        # the sampling parameters reached the server in the protocol's own field names
        body = next(p.body for p in server.posts() if p.key == "q5")
        max_new = body["max_tokens"] if kind == "openai" else body["parameters"]["max_new_tokens"]
        assert max_new == 7
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(x["ok"] for x in lines)


@pytest.mark.parametrize("kind", BACKENDS)
def test_exhausted_retries_are_recorded_then_resumed_without_duplicates(kind, tmp_path):
    out = tmp_path / "gen.jsonl"
    always_down = {"q2": ["500"] * 10, "q5": ["timeout:2"] * 10, "q7": ["malformed"] * 10}
    with FakeServer(responder, faults=always_down) as server:
        backend = make(kind, server, concurrency=3, max_retries=2, timeout=0.3)
        first = generate(reqs(9), backend, output=out, max_failed_fraction=None)
        failed = {r.id for r in first if not r.ok}
        assert failed == {"r2", "r5", "r7"}  # every record is answered or recorded failed
        assert all(r.error for r in first if not r.ok) and all(r.text == "" for r in first if not r.ok)
        assert "timed out" in next(r.error for r in first if r.id == "r5")
        assert "malformed" in next(r.error for r in first if r.id == "r7")
        assert backend.stats.failed == 3
        assert server.keys().count("q2") == 3  # 1 attempt + max_retries
        assert len(out.read_text().splitlines()) == 9

        server.set_faults(None)
        server.clear()
        second = generate(reqs(9), backend, output=out, max_failed_fraction=None)
        assert all(r.ok for r in second)
        assert sorted(server.keys()) == ["q2", "q5", "q7"]  # finished ids were not sent again
        assert [r.text for r in second if r.id not in failed] == [r.text for r in first if r.id not in failed]

        server.clear()
        third = generate(reqs(9), backend, output=out, max_failed_fraction=None)
        assert server.keys() == [] and third == second


@pytest.mark.parametrize("kind", BACKENDS)
def test_concurrency_limit_is_respected(kind):
    with FakeServer(responder, latency=0.15) as server:
        backend = make(kind, server, concurrency=3)
        t0 = time.perf_counter()
        results = generate(reqs(9), backend, progress=False)
        elapsed = time.perf_counter() - t0
        assert all(r.ok for r in results)
        assert server.max_in_flight == 3
        assert elapsed >= 3 * 0.15  # 9 requests, 3 at a time: at least 3 rounds


@pytest.mark.parametrize("kind", BACKENDS)
def test_unauthorized_stops_the_run(kind, tmp_path):
    with FakeServer(responder, faults=["401"] * 100) as server:
        backend = make(kind, server, concurrency=2)
        with pytest.raises(UserError, match="OPENAI_API_KEY" if kind == "openai" else "HF_TOKEN"):
            generate(reqs(20), backend, output=tmp_path / "o.jsonl", progress=False)
        assert len(server.posts()) < 20  # stopped early, did not burn through every request


def test_retry_after_header_is_honoured():
    with FakeServer(responder, faults={"q1": ["429:0.4"]}) as server:
        backend = make("openai", server)
        generate([GenerationRequest(id="a", prompt="q1")], backend, progress=False)
        first, second = server.posts()
        assert second.time - first.time >= 0.4


def test_openai_routes_key_and_params():
    with FakeServer(responder) as server:
        backend = make("openai", server)
        params = SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3, stop=["Q"])
        chat, plain = generate(reqs(2), backend, params, progress=False)
        assert (
            chat.text == "answer to q0 is " and plain.text == "answer to q1 is "
        )  # stop applied by the server
        posts = {p.path: p for p in server.posts()}
        assert set(posts) == {"/v1/chat/completions", "/v1/completions"}
        assert posts["/v1/chat/completions"].body["messages"] == [{"role": "user", "content": "q0"}]
        body = posts["/v1/completions"].body
        assert (
            body["model"],
            body["max_tokens"],
            body["temperature"],
            body["top_p"],
            body["seed"],
            body["stop"],
        ) == (
            "fake",
            5,
            0.7,
            0.9,
            3,
            ["Q"],
        )
        assert posts["/v1/completions"].headers["authorization"] == "Bearer test-key"
        assert backend.stats.prompt_tokens == 2 and backend.stats.completion_tokens == 8


def test_openai_model_discovered_from_server():
    with FakeServer(responder, model="served-model") as server:
        backend = get_backend("openai", base_url=server.url, api_key="k", **FAST)  # bare root: /v1 is added
        generate(reqs(1), backend, progress=False)
        assert backend.model == "served-model" and server.posts()[0].body["model"] == "served-model"


def test_openai_key_from_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="set OPENAI_API_KEY.*any value works"):
        get_backend("openai", base_url="127.0.0.1:9", model="m")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "10.0.0.5:8080")
    backend = get_backend("openai", model="m")
    assert backend.api_key == "from-env" and backend.base_url == "http://10.0.0.5:8080/v1"


def test_unreachable_server_stops_at_once_without_sending():
    server = FakeServer().start()
    url = server.openai_url
    server.stop()  # nothing listens there any more
    backend = get_backend("openai", base_url=url, api_key="k", model="m", max_retries=6, **FAST)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"cannot reach the server at .*check --base_url"):
        generate(reqs(8), backend, progress=False)
    assert time.perf_counter() - t0 < 2 and backend.stats.requests == 0


def test_server_lost_mid_run_stops_after_consecutive_connect_failures(tmp_path):
    server = FakeServer(responder).start()
    server.stop_after(3)  # three answers, then the server goes away
    backend = get_backend(
        "openai", base_url=server.openai_url, api_key="k", model="m", concurrency=1, max_retries=20, **FAST
    )
    out = tmp_path / "out.jsonl"
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"lost the server at .*8 connection attempts in a row failed"):
        generate(reqs(30), backend, output=out, progress=False)
    assert time.perf_counter() - t0 < 15  # not 30 requests x 20 retries of backoff
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in kept if r["ok"]] == ["r0", "r1", "r2"]


def test_failed_requests_fail_the_run_unless_allowed(tmp_path):
    faults = {"q1": ["400"] * 5, "q4": ["400"] * 5}
    with FakeServer(responder, faults=faults) as server:
        out = tmp_path / "out.jsonl"
        with pytest.raises(IncompleteGeneration, match=r"2 of 6 requests failed .* saved in .*re-run") as e:
            generate(reqs(6), make("openai", server), output=out, progress=False)
        assert sorted(e.value.failed) == ["r1", "r4"]
        assert sum(json.loads(line)["ok"] for line in out.read_text().splitlines()) == 4
        results = generate(
            reqs(6), make("openai", server), output=out, progress=False, max_failed_fraction=0.4
        )
        assert [r.ok for r in results] == [True, False, True, True, False, True]
        with pytest.raises(IncompleteGeneration):  # 2/6 > 0.3
            generate(reqs(6), make("openai", server), output=out, progress=False, max_failed_fraction=0.3)


def test_bad_request_fails_that_record_only():
    with FakeServer(responder, faults={"q1": ["400"]}) as server:
        results = generate(reqs(3), make("openai", server), progress=False, max_failed_fraction=None)
        assert [r.ok for r in results] == [True, False, True]
        assert "HTTP 400" in results[1].error and server.keys().count("q1") == 1  # a 400 is not retried


@pytest.mark.parametrize(
    ("given", "api", "expected"),
    [
        ("10.0.0.5:8080", "/v1", "http://10.0.0.5:8080/v1"),
        ("http://host:8000/", "/v1", "http://host:8000/v1"),
        ("https://api.openai.com/v1", "/v1", "https://api.openai.com/v1"),
        ("https://example.org/custom/path/", "/v1", "https://example.org/custom/path"),
        ("localhost:3000", "", "http://localhost:3000"),
    ],
)
def test_normalize_url(given, api, expected):
    assert normalize_url(given, api_path=api) == expected


def test_tgi_needs_an_address(monkeypatch):
    monkeypatch.delenv("TGI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="TGI_BASE_URL"):
        get_backend("tgi")


@pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
def test_vllm_missing_says_how_to_install():
    with pytest.raises(UserError) as info:
        get_backend("vllm", model="default")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install vllm" in message and "openai backend" in message and "--base-url" in message


def test_openai_body_parsing_rejects_wrong_shapes():
    from leanlm.core.generation.openai_backend import _parse
    from leanlm.core.generation.remote import MalformedResponse

    text, usage, finish = _parse(
        {
            "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3},
        },
        chat=True,
    )
    assert text == "hi" and usage == {"prompt_tokens": 3} and finish == "length"
    assert _parse({"choices": [{"text": "yo"}]}, chat=False) == ("yo", {}, None)
    for bad in ({}, {"choices": []}, "<html>oops</html>", {"choices": [{"text": None}]}, {"choices": [{}]}):
        with pytest.raises(MalformedResponse):
            _parse(bad, chat=False)


def test_openai_finish_reason_reaches_meta():
    with FakeServer(responder) as server:
        results = generate(reqs(3), make("openai", server), SamplingParams(max_new_tokens=8), progress=False)
    assert [r.meta.get("finish_reason") for r in results] == ["stop"] * 3
