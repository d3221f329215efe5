"""A stage that lost requests is not done; a re-run redoes every stage whose inputs changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lion_helpers import make_pool

from leanlm.core.generation import IncompleteGeneration
from leanlm.core.records import read_jsonl, write_jsonl
from leanlm.core.testing.fake_servers import FakeServer
from leanlm.core.testing.scripted_teacher import ScriptedTeacher
from leanlm.lion.iterate import IterateConfig, LionRun
from leanlm.lion.prompts import teacher_messages
from leanlm.lion.roles import RoleConfig

OUTPUTS = [
    "iter_1/hard.jsonl",
    "iter_1/easy.jsonl",
    "iter_1/new_hard.jsonl",
    "iter_1/new_easy.jsonl",
    "pools/train_2.jsonl",
    "pools/cache_2.jsonl",
]


def _config(server: FakeServer, pool: Path, **kw) -> IterateConfig:
    role = RoleConfig(
        backend="openai",
        model="m",
        base_url=server.openai_url,
        api_key="k",
        concurrency=4,
        backoff_base=0.01,
        timeout=5.0,
        max_retries=2,
    )
    student = RoleConfig(
        backend="openai", model="student", base_url=server.openai_url, api_key="k", concurrency=4
    )
    defaults = dict(
        train_pool=str(pool), teacher=role, student_role=student, train=False, num_hard=3, num_easy=3
    )
    return IterateConfig(**{**defaults, **kw})


def _dead_prompts(pool: list[dict], n: int) -> dict[str, list[str]]:
    """Fault plan: the teacher prompts of the first ``n`` instructions answer 500 on every attempt."""
    keys = [teacher_messages(r["instruction"], r.get("input"))[-1]["content"] for r in pool[:n]]
    return {k: ["500"] * 100 for k in keys}


@pytest.fixture
def pool(tmp_path: Path) -> tuple[Path, list[dict]]:
    records = make_pool(16)
    path = tmp_path / "pool.jsonl"
    write_jsonl(path, records)
    return path, read_jsonl(path)


def test_lost_requests_stop_the_stage_and_a_rerun_equals_an_uninterrupted_run(tmp_path, pool):
    path, records = pool
    with FakeServer(ScriptedTeacher()) as server:
        LionRun(tmp_path / "reference", _config(server, path)).run()
    with FakeServer(ScriptedTeacher(), faults=_dead_prompts(records, 2)) as server:
        run = tmp_path / "run"
        with pytest.raises(IncompleteGeneration, match=r"teacher: 2 of 16 requests failed .*re-run"):
            LionRun(run, _config(server, path)).run()
        state = json.loads((run / "state.json").read_text())
        assert state["done"].get("1", []) == []  # neither teacher nor anything after it counts as done
        server.set_faults(None)  # the server recovers
        LionRun(run, _config(server, path)).run()
    for rel in OUTPUTS:
        assert read_jsonl(run / rel) == read_jsonl(tmp_path / "reference" / rel), rel


def test_allowed_failures_then_recovered_answers_retrain_and_redo_downstream(tmp_path, pool, tiny_dir):
    path, records = pool
    train = {"max_steps": 1, "max_length": 48, "per_device_train_batch_size": 4, "save_steps": 100}
    kw = dict(train=True, student=str(tiny_dir), train_options=train)
    with FakeServer(ScriptedTeacher()) as server:
        LionRun(tmp_path / "reference", _config(server, path, **kw)).run()
    with FakeServer(ScriptedTeacher(), faults=_dead_prompts(records, 2)) as server:
        run = tmp_path / "run"
        first = LionRun(run, _config(server, path, max_failed_fraction=0.2, **kw)).run()[0]
        assert first["teacher_answered"] == 14 and first["stages"]["train"]["examples"] == 14
        server.set_faults(None)
        again = LionRun(run, _config(server, path, **kw)).run()[0]  # fraction back to 0: a mutable setting
        # unchanged inputs: the finished training is kept (replayed, like the API stages), not redone
        weights = run / "iter_1" / "student" / "model.safetensors"
        trained_at, sent = weights.stat().st_mtime_ns, len(server.posts())
        third = LionRun(run, _config(server, path, **kw)).run()[0]
        assert len(server.posts()) == sent and weights.stat().st_mtime_ns == trained_at
        assert third["stages"]["train"] == again["stages"]["train"]
    assert again["teacher_answered"] == 16 and again["stages"]["train"]["examples"] == 16  # retrained
    assert (run / "iter_1" / "student.stale").is_dir()  # the student trained on 14 answers, set aside
    for rel in OUTPUTS:
        assert read_jsonl(run / rel) == read_jsonl(tmp_path / "reference" / rel), rel


def test_paid_tokens_count_every_attempt(tmp_path, pool):
    path, records = pool
    with FakeServer(ScriptedTeacher()) as server:
        reference = LionRun(tmp_path / "reference", _config(server, path)).run()[0]
    with FakeServer(ScriptedTeacher(), faults=_dead_prompts(records, 3)) as server:
        run = tmp_path / "run"
        with pytest.raises(IncompleteGeneration):
            LionRun(run, _config(server, path)).run()
        server.set_faults(None)
        resumed = LionRun(run, _config(server, path)).run()[0]
    paid, ref = resumed["stages"]["teacher"]["paid"], reference["stages"]["teacher"]["paid"]
    assert paid["answers"] == 16 + 2 * 3  # 16 answers + the 3 failures recorded in each of the 2 first passes
    assert paid["prompt_tokens"] == ref["prompt_tokens"] > resumed["stages"]["teacher"]["prompt_tokens"]
    assert resumed["api"]["prompt_tokens"] == reference["api"]["prompt_tokens"]
