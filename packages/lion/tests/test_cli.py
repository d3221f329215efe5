"""Console scripts: the stages one by one through the CLI, --help, and one-line errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from leanlm.core.console import run_cli
from leanlm.core.records import read_jsonl
from leanlm.core.testing.fake_servers import FakeServer
from leanlm.core.testing.scripted_teacher import ScriptedTeacher, is_hard
from leanlm.lion import cli

SCRIPTS = [
    "lion-teacher",
    "lion-infer",
    "lion-referee",
    "lion-discriminate",
    "lion-generate",
    "lion-train",
    "lion-iterate",
    "lion-weight-diff",
]


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_stage_by_stage_through_the_cli(tmp_path, pool_file):
    with FakeServer(ScriptedTeacher()) as server:
        api = ["--base_url", server.openai_url, "--api_key", "k", "--model", "m"]
        run_cli(cli.teacher, "lion-teacher", [str(pool_file), str(tmp_path / "t.jsonl"), *api])
        run_cli(
            cli.infer, "lion-infer", [str(pool_file), str(tmp_path / "s.jsonl"), "--backend", "openai", *api]
        )
        run_cli(
            cli.referee,
            "lion-referee",
            [str(tmp_path / "t.jsonl"), str(tmp_path / "s.jsonl"), str(tmp_path / "r.jsonl"), *api],
        )
        summary = run_cli(
            cli.discriminate,
            "lion-discriminate",
            [str(tmp_path / "r.jsonl"), str(tmp_path / "hard.jsonl"), str(tmp_path / "easy.jsonl")],
        )
        out = run_cli(
            cli.generate,
            "lion-generate",
            [
                str(tmp_path / "hard.jsonl"),
                str(tmp_path / "new.jsonl"),
                "--kind",
                "hard",
                "--num",
                "3",
                "--reference",
                str(pool_file),
                *api,
            ],
        )
        sent = len(server.posts())
        assert sent == 16 + 16 + 32 + out["requests"]
        # every command again: all answers come from the <output>.requests.jsonl caches
        run_cli(cli.teacher, "lion-teacher", [str(pool_file), str(tmp_path / "t.jsonl"), *api])
        run_cli(
            cli.referee,
            "lion-referee",
            [str(tmp_path / "t.jsonl"), str(tmp_path / "s.jsonl"), str(tmp_path / "r.jsonl"), *api],
        )
        assert len(server.posts()) == sent
    teacher = read_jsonl(tmp_path / "t.jsonl")
    assert len(teacher) == 16 and teacher[0]["input"] == "context number 0"
    hard = read_jsonl(tmp_path / "hard.jsonl")
    assert summary["hard"] == len(hard) == sum(is_hard(r["instruction"]) for r in teacher)
    assert all(h["score_gap"] == 4.0 for h in hard)
    assert len(read_jsonl(tmp_path / "new.jsonl")) == 3


def test_help_for_every_script():
    for name in SCRIPTS:
        r = subprocess.run([_script(name), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (name, r.stderr[-500:])
        assert "SYNOPSIS" in r.stdout + r.stderr


def _one_line_error(args: list[str], tmp_path: Path, env: dict | None = None) -> str:
    r = subprocess.run(
        args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, **(env or {})}
    )
    lines = [line for line in r.stderr.strip().splitlines() if ": error: " in line or "Traceback" in line]
    assert r.returncode == 2, r.stderr[-1500:]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-1500:]
    return lines[0]


def test_clear_errors(tmp_path, pool_file):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    r = subprocess.run(
        [_script("lion-teacher"), str(pool_file), str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 2 and "no OpenAI API key" in r.stderr and "Traceback" not in r.stderr

    with FakeServer() as server:
        dead = server.openai_url  # the port is closed once the server stops
    line = _one_line_error([_script("lion-teacher"), str(pool_file), "o.jsonl", "--base_url", dead], tmp_path)
    assert "cannot reach" in line and dead in line

    (tmp_path / "empty.jsonl").write_text("\n")
    line = _one_line_error([_script("lion-iterate"), "empty.jsonl", "run", "--api_key", "k"], tmp_path)
    assert "empty" in line

    (tmp_path / "bad.jsonl").write_text('{"instruction": "fine"}\n{"instruction": "broken\n')
    line = _one_line_error([_script("lion-teacher"), "bad.jsonl", "o.jsonl", "--api_key", "k"], tmp_path)
    assert "bad.jsonl:2" in line and "invalid JSON" in line


@pytest.mark.parametrize("kind", ["medium"])
def test_generate_rejects_unknown_kind(tmp_path, kind):
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "Name the planets of the solar system."}\n')
    with FakeServer(ScriptedTeacher()) as server:
        with pytest.raises(SystemExit) as e:
            run_cli(
                cli.generate,
                "lion-generate",
                [
                    str(tmp_path / "seeds.jsonl"),
                    str(tmp_path / "n.jsonl"),
                    "--kind",
                    kind,
                    "--base_url",
                    server.openai_url,
                    "--api_key",
                    "k",
                ],
            )
        assert e.value.code == 2 and server.posts() == []
