"""Unknown flags and out-of-range values are refused before a command runs (issue: reliability)."""

from __future__ import annotations

import pytest

from leanlm.core.console import EXIT_USER_ERROR, check_flags, run_cli
from leanlm.core.errors import UserError
from leanlm.core.flags import check_flag_values, parse_flags
from leanlm.core.testing.cli_checks import assert_scripts_reject_bogus_flag
from leanlm.core.testing.fake_servers import FakeServer


def command(run_dir: str, iterations: int = 1, learning_rate: float = 1e-3, dry: bool = False) -> str:
    """A stand-in command that records that it ran."""
    calls.append((run_dir, iterations))
    return "ran"


calls: list = []


class Tool:
    def __init__(self, verbose: bool = False):
        self.verbose = verbose

    def make(self, path: str, dtype: str = "float16") -> str:
        calls.append(path)
        return path


def test_unknown_flag_names_the_closest_valid_one() -> None:
    with pytest.raises(UserError, match=r"unknown flag --itreations; did you mean --iterations\?"):
        check_flags(command, ["--run_dir", "x", "--itreations", "2"])
    with pytest.raises(UserError, match="unknown flag --zzz"):
        check_flags(command, ["--zzz=1"])


def test_known_flags_in_every_spelling_pass() -> None:
    for argv in (
        ["--run_dir", "x"],
        ["--run-dir=x", "--iterations", "-1"],  # -1 is a value, not a flag
        ["--nodry"],  # fire's negation
        ["x", "--learning_rate", "1e-4"],
        ["--run_dir", "x", "--", "--trace"],  # after a lone --: fire's own flags
    ):
        check_flags(command, argv)
    check_flags(command, ["--help", "--whatever"])  # help wins: fire prints the usage


def test_subcommands_and_class_init_flags() -> None:
    check_flags(Tool, ["make", "--path", "p", "--dtype", "float32", "--verbose"])
    with pytest.raises(UserError, match="did you mean --dtype"):
        check_flags(Tool, ["make", "--dtpye", "float32"])
    with pytest.raises(UserError, match="unknown flag --bogus"):
        check_flags(Tool(), ["--bogus", "1"])  # no subcommand chosen: nothing takes --bogus


def test_run_cli_rejects_before_running(capsys: pytest.CaptureFixture) -> None:
    calls.clear()
    with pytest.raises(SystemExit) as e:
        run_cli(command, "tool", ["--run_dir", "x", "--bogus_flag", "3"])
    assert e.value.code == EXIT_USER_ERROR and calls == []
    assert (
        capsys.readouterr().err.strip() == "tool: error: unknown flag --bogus_flag; see --help for the flags"
    )
    run_cli(command, "tool", ["--run_dir", "x"])
    assert calls == [("x", 1)]


def test_parse_flags_values() -> None:
    assert parse_flags(
        ["a", "--max_steps", "-5", "--lr=0.1", "--dry", "--out-dir", "o", "--", "--trace"]
    ) == {
        "max_steps": -5,
        "lr": 0.1,
        "dry": True,
        "out_dir": "o",
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_steps", "-5"], "--max_steps must be -1"),
        (["--max_steps", "0"], "--max_steps must be -1"),
        (["--batch_size", "0"], "--batch_size must be an integer >= 1, got 0"),
        (["--limit", "-2"], "--limit must be an integer >= 1"),
        (["--iterations", "-1"], "--iterations must be an integer >= 1"),
        (["--cutoff", "-10"], "--cutoff must be"),
        (["--epochs", "0"], "--epochs must be a number > 0"),
        (["--learning_rate", "abc"], "--learning_rate must be a number > 0"),
        (["--concurrency", "2.5"], "--concurrency must be an integer"),
        (["--top_p", "1.5"], r"--top_p must be a number in \(0, 1\]"),
        (["--max_failed_fraction", "2"], r"--max_failed_fraction must be a number in \[0, 1\]"),
    ],
)
def test_out_of_range_values(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_flag_values(argv)


def test_in_range_values_pass(tmp_path) -> None:
    check_flag_values(["--max_steps", "-1", "--max_steps", "3", "--batch_size", "2", "--top_p", "1"])
    check_flag_values(["--temperature", "0", "--seed", "0", "--output", str(tmp_path / "new" / "a.jsonl")])
    check_flag_values(["--output_dir", str(tmp_path), "--run_dir", str(tmp_path / "later")])


def test_output_paths_checked_up_front(tmp_path) -> None:
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(UserError, match="is a folder; give a file path"):
        check_flag_values(["--output", str(tmp_path)])
    with pytest.raises(UserError, match="is a file; give a folder path"):
        check_flag_values(["--output_dir", str(a_file)])
    with pytest.raises(UserError, match="cannot be created"):
        check_flag_values(["--output", str(a_file / "below" / "x.jsonl")])


def test_leanlm_command_rejects_bogus_flags(tmp_path, capsys) -> None:
    with FakeServer(responder=lambda body: "hi") as server:
        tried = assert_scripts_reject_bogus_flag("leanlm-core", tmp_path, capsys, server)
    assert tried >= 4  # leanlm, leanlm models, leanlm datasets, leanlm demo


def test_leanlm_models_unknown_name_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        run_cli(
            __import__("leanlm.core.leanlm_command", fromlist=["LeanLM"]).LeanLM(),
            "leanlm",
            ["models", "llama-99b"],
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == EXIT_USER_ERROR and len(err) == 1 and "llama-99b" in err[0]


def test_checkpoints_env_pointing_at_a_file(tmp_path, monkeypatch) -> None:
    from leanlm.core.models import resolve_model

    a_file = tmp_path / "ckpts"
    a_file.write_text("")
    monkeypatch.setenv("LEANLM_CHECKPOINTS", str(a_file))
    with pytest.raises(UserError, match="LEANLM_CHECKPOINTS=.*is a file"):
        resolve_model("llama2-7b")


def test_empty_model_folder_is_one_line(tmp_path) -> None:
    from leanlm.core.models import load_model

    with pytest.raises(UserError, match="is empty; expected a model folder"):
        load_model(str(tmp_path))


def test_library_request_logs_are_quiet_by_default(monkeypatch) -> None:
    import logging

    from leanlm.core.console import setup_logging

    monkeypatch.delenv("LEANLM_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    before = root.level, logging.getLogger("leanlm").level
    try:
        setup_logging()
        assert not logging.getLogger("httpx2").isEnabledFor(logging.INFO)  # openai's per-request lines
        assert logging.getLogger("leanlm.lion").isEnabledFor(logging.INFO)
        setup_logging("DEBUG")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before[0])
        logging.getLogger("leanlm").setLevel(before[1])


def test_no_network_is_one_quick_line(monkeypatch) -> None:
    import socket
    import time

    from leanlm.core import models

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: what a machine without network sees
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(models, "_HUB_REACHABLE", {})
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"'qwen2.5-0.5b-instruct' .*cannot be reached \(no network\?\)"):
        models.model_location("qwen2.5-0.5b-instruct")
    assert time.perf_counter() - t0 < 5  # not a minute of retries
    assert "HF_HUB_OFFLINE=1" not in models._missing_message(models.ResolvedModel("x/y", "missing", "x/y"))


def test_current_model_aliases_resolve_like_the_others() -> None:
    from leanlm.core.models import ALIASES, resolve_model

    for alias in (
        "llama3.1-8b-instruct",
        "qwen3-8b",
        "mistral-7b-instruct",
        "gemma2-2b-it",
        "phi3-mini-instruct",
    ):
        assert alias in ALIASES and resolve_model(alias).kind in {"hub", "missing"}
