"""bita-gen-outputs against a server that is not there, or that loses some requests."""

from __future__ import annotations

import time

import pytest

from leanlm.bita.cli import gen_outputs
from leanlm.core.console import EXIT_USER_ERROR, run_cli
from leanlm.core.records import write_jsonl
from leanlm.core.testing.fake_servers import FakeServer


def _prompts(tmp_path, n: int = 8):
    path = tmp_path / "prompts.jsonl"
    write_jsonl(path, [{"id": f"p{i}", "prompt": f"question {i}"} for i in range(n)])
    return path


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(gen_outputs, "bita-gen-outputs", [str(a) for a in argv])
    return e.value.code, capsys.readouterr().err.strip().splitlines()


def test_closed_port_is_one_line_and_exit_2_at_once(tmp_path, capsys):
    server = FakeServer().start()
    url = server.url
    server.stop()
    out = tmp_path / "out.jsonl"
    t0 = time.perf_counter()
    code, err = _run(
        [
            _prompts(tmp_path),
            "--output",
            out,
            "--backend",
            "openai",
            "--base_url",
            url,
            "--api_key",
            "k",
            "--model",
            "m",
        ],
        capsys,
    )
    assert code == EXIT_USER_ERROR and time.perf_counter() - t0 < 20  # imports included; was 110 s
    assert len(err) == 1 and "cannot reach the server" in err[0]
    assert not out.exists() or out.read_text() == ""  # no record, failed or not, was written


def test_lost_requests_fail_the_run_and_a_rerun_finishes(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    args = [_prompts(tmp_path), "--output", out, "--backend", "openai", "--api_key", "k", "--model", "m"]
    with FakeServer(lambda body: "an answer", faults={"question 3": ["400"]}) as server:
        code, err = _run([*args, "--base_url", server.openai_url], capsys)
        assert code == EXIT_USER_ERROR and "1 of 8 requests failed" in err[-1] and "re-run" in err[-1]
        summary = run_cli(
            gen_outputs, "bita-gen-outputs", [str(a) for a in [*args, "--base_url", server.openai_url]]
        )
    assert summary["answers"] == 8 and summary["failed"] == 0
