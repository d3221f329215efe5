"""config_command: a dataclass's fields are a console script's flags, typed and checked once."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

from leanlm.core.config_cli import coerce, config_command, flag
from leanlm.core.console import EXIT_USER_ERROR, run_cli
from leanlm.core.errors import UserError


@dataclass
class Job:
    data: str = flag(help="the input file")
    steps: int = flag(10, "optimizer steps")
    lr: float = flag(1e-4, "learning rate")
    train: bool = flag(True, "train before evaluating")
    limit: int | None = flag(None, "at most this many records")
    out: Path = flag(Path("out"), "where to write")


def run_job(job: Job) -> dict:
    """Run a job."""
    return {
        "data": job.data,
        "steps": job.steps,
        "lr": job.lr,
        "train": job.train,
        "limit": job.limit,
        "out": str(job.out),
    }


command = config_command(Job, run_job)


def test_signature_and_help_come_from_the_fields():
    params = inspect.signature(command).parameters
    assert list(params) == ["data", "steps", "lr", "train", "limit", "out"]
    assert params["data"].default is inspect.Parameter.empty and params["steps"].default == 10
    assert command.__doc__.startswith("Run a job.") and "    steps: optimizer steps" in command.__doc__


def test_command_line_values_are_coerced_to_the_field_types(capsys):
    got = run_cli(
        command, "job", ["a.jsonl", "--steps", "3.0", "--lr", "1", "--train", "false", "--limit", "None"]
    )
    assert got == {"data": "a.jsonl", "steps": 3, "lr": 1.0, "train": False, "limit": None, "out": "out"}
    assert type(got["lr"]) is float and type(got["steps"]) is int


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a", "--steps", "x"], "--steps must be an integer, got 'x'"),
        (["a", "--steps", "2.5"], "--steps must be an integer"),
        (["a", "--train", "maybe"], "--train must be true or false"),
        (["a", "--lr", "fast"], "--lr must be a number"),
        (["a", "--stpes", "3"], "unknown flag --stpes; did you mean --steps?"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(command, "job", argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == EXIT_USER_ERROR and len(err) == 1 and message in err[0], err


def test_missing_required_field_is_a_user_error():
    with pytest.raises(UserError, match="data"):
        command()


def test_coerce_tuple_to_comma_string_and_none_only_when_allowed():
    assert coerce(("tensorboard", "wandb"), str, "report_to") == "tensorboard,wandb"
    assert coerce(7, str, "model") == "7"
    with pytest.raises(UserError, match="--steps needs a value"):
        coerce(None, int, "steps")


def test_none_text_is_a_value_for_text_fields_and_none_for_numbers():
    assert coerce("none", str | None, "exclude") == "none"
    assert coerce("none", int | None, "limit") is None
    assert coerce(None, str | None, "exclude") is None
