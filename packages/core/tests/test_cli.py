import subprocess
import sys

import pytest

from leanlm.core.console import parse_bool, run_cli
from leanlm.core.errors import UserError


def _cmd(x: int = 1) -> int:
    """Double x."""
    if x < 0:
        raise UserError("x must be >= 0")
    return 2 * x


def test_user_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(_cmd, "toy", ["--x", "-3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["toy: error: x must be >= 0"]


def test_success_returns_value():
    assert run_cli(_cmd, "toy", ["--x", "4"]) == 8


def test_parse_bool():
    assert parse_bool("true") is True and parse_bool("False") is False
    with pytest.raises(UserError):
        parse_bool("maybe", "--flag")


def _leanlm(*args):
    return subprocess.run(
        [sys.executable, "-m", "leanlm.core.leanlm_command", *args], capture_output=True, text=True
    )


def test_leanlm_help_and_models():
    h = _leanlm("--help")
    text = h.stdout + h.stderr  # fire prints help to stderr when not on a terminal
    assert h.returncode == 0 and "models" in text and "datasets" in text and "demo" in text
    m = _leanlm("models")
    assert m.returncode == 0
    assert "smollm2-135m" in m.stdout and "embedded" in m.stdout and "llama2-7b-chat" in m.stdout


def test_leanlm_demo_unknown_method():
    r = _leanlm("demo", "no-such-method")
    assert r.returncode == 2
    assert r.stderr.strip().endswith("installed: " + r.stderr.strip().split("installed: ")[-1])
    assert "no installed method named no-such-method" in r.stderr
