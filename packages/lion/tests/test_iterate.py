"""lion-iterate against the loopback server: reports, resume without repeats, kill -9 and restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from lion_helpers import make_pool

from leanlm.core.records import ResumableJsonlWriter, read_jsonl, write_jsonl
from leanlm.core.testing.fake_servers import FakeServer
from leanlm.core.testing.scripted_teacher import ScriptedTeacher, is_hard
from leanlm.lion.iterate import IterateConfig, LionRun
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
    )
    student = RoleConfig(
        backend="openai", model="student", base_url=server.openai_url, api_key="k", concurrency=4
    )
    defaults = dict(
        train_pool=str(pool), teacher=role, student_role=student, train=False, num_hard=3, num_easy=3
    )
    return IterateConfig(**{**defaults, **kw})


def test_two_iterations_report_and_resume(tmp_path, pool_file):
    with FakeServer(ScriptedTeacher(), faults=lambda n, body: "429" if n % 7 == 0 else None) as server:
        cfg = _config(server, pool_file, iterations=2, price_in=1.0, price_out=2.0)
        reports = LionRun(tmp_path / "run", cfg).run()
        sent = len(server.posts())
        r1, r2 = reports
        pool = read_jsonl(tmp_path / "run" / "pools" / "train_1.jsonl")
        n_hard = sum(is_hard(r["instruction"]) for r in pool)
        assert (r1["train_pool"], r1["cache_pool"]) == (16, 16)
        assert (r1["hard"], r1["easy"], r1["unscored"]) == (n_hard, 16 - n_hard, 0)
        assert r1["mean_teacher_score"] == 9.5
        assert r1["mean_student_score"] == pytest.approx((5.5 * n_hard + 9.5 * (16 - n_hard)) / 16)
        assert (r1["new_hard"], r1["new_easy"]) == (3, 3)
        assert (r2["train_pool"], r2["cache_pool"]) == (
            22,
            6,
        )  # train grows by the new ones; cache = new ones
        api = r1["api"]
        assert api["requests"] > 16 + 32 and api["retries"] > 0
        assert api["cost_usd"] == pytest.approx((api["prompt_tokens"] + 2 * api["completion_tokens"]) / 1e6)
        hard = read_jsonl(tmp_path / "run" / "iter_1" / "hard.jsonl")
        assert any(h["input"] for h in hard + read_jsonl(tmp_path / "run" / "iter_1" / "easy.jsonl"))
        assert "| 2 | 22 | 6 |" in (tmp_path / "run" / "report.md").read_text()
        # the second iteration's teacher stage paid only for the 6 new instructions
        assert r2["stages"]["teacher"]["cached"] == 16
        assert r1["stages"]["pools"] == {"stage": "pools", "next_train": 22, "next_cache": 6}
        # a finished run re-run: everything replays from the caches, nothing is sent; the pools stage
        # rewrites its files from its inputs like every other stage, so lost pool files come back
        pools = tmp_path / "run" / "pools"
        written = {p.name: read_jsonl(p) for p in pools.glob("*_2.jsonl")}
        for name in written:
            (pools / name).unlink()
        again = LionRun(tmp_path / "run", cfg).run()
        assert len(server.posts()) == sent
        assert [a["hard"] for a in again] == [r["hard"] for r in reports]
        assert {name: read_jsonl(pools / name) for name in written} == written and len(written) == 2
        assert again[0]["stages"] == r1["stages"]  # the replay reports the first run's stages


def _cli_args(url: str, pool: Path, run_dir: Path) -> list[str]:
    exe = str(Path(sys.executable).parent / "lion-iterate")
    return [
        exe,
        "--train_pool",
        str(pool),
        "--run_dir",
        str(run_dir),
        "--base_url",
        url,
        "--api_key",
        "k",
        "--model",
        "m",
        "--concurrency",
        "4",
        "--student_backend",
        "openai",
        "--student_base_url",
        url,
        "--train",
        "false",
        "--num_hard",
        "3",
        "--num_easy",
        "3",
        "--timeout",
        "60",
    ]


def _recorded_ok(run_dir: Path) -> int:
    """Answers already on disk in every cache file (opening also trims a torn last line)."""
    n = 0
    for path in [run_dir / "teacher.jsonl", *run_dir.glob("iter_*/*.jsonl")]:
        if path.name in {"student.jsonl", "referee.jsonl", "generate.jsonl", "teacher.jsonl"}:
            with ResumableJsonlWriter(path) as w:
                n += sum(1 for r in w.done.values() if r.get("ok"))
    return n


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    pool = base / "pool.jsonl"
    write_jsonl(pool, make_pool(16))
    with FakeServer(ScriptedTeacher()) as server:
        subprocess.run(_cli_args(server.openai_url, pool, base / "run"), check=True, capture_output=True)
        return pool, base / "run", server.keys()


@pytest.mark.parametrize("kill_at", [10, 45])  # during the teacher stage; during the referee stage
def test_kill_and_restart_sends_no_duplicate(tmp_path, reference_run, kill_at):
    pool, ref_dir, ref_keys = reference_run
    scripted = ScriptedTeacher()
    reached, release = threading.Event(), threading.Event()
    count = [0]
    lock = threading.Lock()

    def responder(body):
        with lock:
            count[0] += 1
            n = count[0]
        if n >= kill_at and not release.is_set():
            reached.set()
            release.wait(30)  # hold the in-flight requests until the client is dead
        return scripted(body)

    run_dir = tmp_path / "run"
    with FakeServer(responder) as server:
        proc = subprocess.Popen(
            _cli_args(server.openai_url, pool, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert reached.wait(120), proc.stderr.read().decode()[-2000:]
        time.sleep(0.3)  # let the answers before kill_at be written (or not: either is handled)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = server.keys()
        recorded = _recorded_ok(run_dir)
        release.set()
        server.clear()
        done = subprocess.run(_cli_args(server.openai_url, pool, run_dir), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        second = server.keys()
    in_flight = len(first) - recorded
    assert 0 < in_flight <= 4  # concurrency 4: at most 4 requests were unanswered when killed
    # only the unrecorded in-flight requests are sent again; all the rest exactly as an uninterrupted run
    repeated = sum((Counter(first) & Counter(second)).values())
    assert repeated == in_flight
    assert Counter(first) + Counter(second) == Counter(ref_keys) + (Counter(first) & Counter(second))
    for rel in OUTPUTS:
        assert read_jsonl(run_dir / rel) == read_jsonl(ref_dir / rel), rel
    report = json.loads((run_dir / "iter_1" / "report.json").read_text())
    ref = json.loads((ref_dir / "iter_1" / "report.json").read_text())
    for key in ("hard", "easy", "mean_teacher_score", "mean_student_score", "new_hard", "new_easy"):
        assert report[key] == ref[key]
