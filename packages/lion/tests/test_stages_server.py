"""Stages against the loopback OpenAI-compatible server (real HTTP, the real openai client), with faults."""

from __future__ import annotations

import pytest
from lion_helpers import make_pool

from leanlm.core.errors import UserError
from leanlm.core.testing.fake_servers import FakeServer
from leanlm.core.testing.oracles import brute_force_max_rouge
from leanlm.core.testing.scripted_teacher import ScriptedTeacher, is_hard
from leanlm.lion import stages
from leanlm.lion.discriminate import discriminate
from leanlm.lion.filters import RougeDeduper
from leanlm.lion.pools import normalize_pool
from leanlm.lion.prompts import teacher_messages
from leanlm.lion.roles import RoleConfig, make_backend


def _backend(server: FakeServer, **kw):
    cfg = RoleConfig(
        backend="openai",
        model="m",
        base_url=server.openai_url,
        api_key="k",
        concurrency=4,
        backoff_base=0.01,
        timeout=kw.pop("timeout", 5.0),
        **kw,
    )
    return make_backend(cfg)


def test_teacher_with_429_500_timeout_and_malformed(tmp_path):
    pool = normalize_pool(make_pool(12))
    key = lambda i: teacher_messages(pool[i]["instruction"], pool[i]["input"])[-1]["content"]  # noqa: E731
    faults = {
        key(0): ["429", "429"],
        key(1): ["500", "503"],
        key(2): ["timeout:1.5"],
        key(3): ["malformed"],
        key(4): ["500"] * 10,
    }
    with FakeServer(ScriptedTeacher(), faults=faults) as server:
        b = _backend(server, timeout=0.5, max_retries=3)
        answers, report = stages.teacher_answers(
            pool, b, tmp_path / "t.jsonl", passes=1, max_failed_fraction=0.1
        )
        # key(4) fails 4 times (1 + 3 retries): reported by id, not lost (1 of 12 is allowed here)
        assert report.failed == [pool[4]["id"]] and report.ok == 11
        assert {a["id"] for a in answers} == {r["id"] for r in pool} - {pool[4]["id"]}
        assert all(a["output"].startswith("Teacher:") for a in answers)
        assert answers[0]["input"] == pool[0]["input"] == "context number 0"  # input carried through
        assert report.retries >= 2 + 2 + 1 + 1 + 3
        n = len(server.posts())
        # re-run: only the failed one is asked again (its fault plan is used up after 10 tries? 4 used: 500 again)
        answers2, report2 = stages.teacher_answers(pool, b, tmp_path / "t.jsonl", passes=2)
        asked = server.keys()[n:]
        assert set(asked) == {key(4)} and report2.cached == 11
        assert report2.ok == 12 and report2.failed == []
        assert [a["output"] for a in answers2 if a["id"] != pool[4]["id"]] == [a["output"] for a in answers]


def test_referee_both_orders_retries_unparsable_and_reports(tmp_path):
    pool = normalize_pool(make_pool(10))
    first, always = {pool[1]["instruction"]}, {pool[2]["instruction"]}
    items = [
        {**r, "teacher_output": f"Teacher: answer {i}", "student_output": f"student says {i}"}
        for i, r in enumerate(pool)
    ]
    with FakeServer(ScriptedTeacher(unparsable_first=first, unparsable_always=always)) as server:
        b = _backend(server)
        scores, reviews, report = stages.referee_scores(items, b, tmp_path / "r.jsonl", attempts=3)
        posts = server.posts()
    # 20 first reviews, then 2+2 retries for the two bad items, then 2 more for the hopeless one
    assert len(posts) == 20 + 4 + 2
    assert {p.body["seed"] for p in posts} == {0, 1, 2} and all(
        p.body["temperature"] in (0.2, 0.7) for p in posts
    )
    assert scores[pool[1]["id"]]["ts"] is not None  # fixed by a retry
    assert scores[pool[2]["id"]] == {"ts": None, "st": None}
    assert report.extra["unparsable_count"] == 2 and report.ok == 9
    d = discriminate(items, scores)
    assert d.unscored == [pool[2]["id"]]  # never averaged in as -1
    for row in d.hard + d.easy:  # the +1 position bias cancels: gaps are exactly 4 (hard) or 0 (easy)
        assert row["score_gap"] == (4.0 if is_hard(row["instruction"]) else 0.0)
    assert {r["id"] for r in d.hard} == {r["id"] for r in pool if is_hard(r["instruction"])} - {pool[2]["id"]}
    assert len(reviews) == 26


def test_generation_filters_rounds_and_resume(tmp_path):
    seeds = [{**r, "teacher_output": "t"} for r in normalize_pool(make_pool(8))]
    cache_pool = [r["instruction"] for r in normalize_pool(make_pool(30, start=100))]
    with FakeServer(ScriptedTeacher()) as server:
        b = _backend(server)
        ded = RougeDeduper(cache_pool)
        new, report = stages.generate_instructions("hard", seeds, 6, b, tmp_path / "g.jsonl", ded)
        n = len(server.posts())
        assert n >= 6 and report.ok == len(new) == 6
        texts = [r["instruction"] for r in new]
        for k, t in enumerate(texts):  # each is novel against the pool + the ones accepted before it
            assert brute_force_max_rouge(t, cache_pool + texts[:k]) <= 0.7
            assert "instruction" not in t.lower() and len(t.split()) > 3
        assert all(r["seed_output"] == "t" and r["kind"] == "hard" for r in new)
        # more than there are distinct seeds: repeats of a seed give the same text -> ROUGE rejects, then stops
        new2, report2 = stages.generate_instructions(
            "easy", seeds, 20, b, tmp_path / "g.jsonl", ded, max_requests=24
        )
        assert report2.extra["requests_planned"] == 24 and len(new2) < 20
        assert report2.extra["rejected"].get("ROUGE-L > 0.7", 0) > 0
        # replay from the cache: same result, nothing sent
        m = len(server.posts())
        again, _ = stages.generate_instructions(
            "hard", seeds, 6, b, tmp_path / "g.jsonl", RougeDeduper(cache_pool)
        )
        assert again == new and len(server.posts()) == m


def test_missing_key_and_unreachable_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        make_backend(RoleConfig(backend="openai", model="gpt-3.5-turbo"))
    with FakeServer() as server:
        port = server.port
    with pytest.raises(UserError, match=f"cannot reach the server at http://127.0.0.1:{port}"):
        make_backend(RoleConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key="k"))


def test_all_requests_failing_is_one_error(tmp_path):
    pool = normalize_pool(make_pool(3))
    with FakeServer(ScriptedTeacher(), faults=lambda n, body: "500") as server:
        b = _backend(server, max_retries=1)
        with pytest.raises(UserError, match="teacher: 3 of 3 requests failed"):
            stages.teacher_answers(pool, b, tmp_path / "t.jsonl", passes=1)
