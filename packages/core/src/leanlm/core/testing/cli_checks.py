"""Checks every package's tests run on its console scripts: each rejects an unknown flag in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def console_scripts(distribution: str) -> dict[str, Any]:
    """``name -> main`` for every console script an installed leanlm distribution declares."""
    from importlib.metadata import distribution as dist

    return {ep.name: ep.load() for ep in dist(distribution).entry_points if ep.group == "console_scripts"}


def command_lines(main: Any, argv: list[str]) -> list[list[str]]:
    """``argv`` for a script, and once per subcommand for a script with several (``leanlm demo ...``)."""
    import inspect

    component = main.component
    if inspect.isroutine(component):
        return [list(argv)]
    subcommands = [n for n in dir(component) if not n.startswith("_") and callable(getattr(component, n))]
    return [list(argv)] + [[n, *argv] for n in subcommands]


def assert_scripts_reject_bogus_flag(distribution: str, workdir: Any, capsys: Any, server: Any = None) -> int:
    """Every console script of ``distribution`` given ``--bogus_flag 3`` exits 2 with one line naming
    the flag, writes nothing into ``workdir`` and, with ``server`` (a FakeServer passed as
    ``--base_url``), sends it no request. Returns how many command lines were tried."""
    import contextlib

    import pytest

    from leanlm.core.console import EXIT_USER_ERROR, run_cli

    tried = 0
    for name, main in console_scripts(distribution).items():
        extra = ["--base_url", server.openai_url, "--backend", "openai"] if server is not None else []
        for argv in command_lines(main, ["--bogus_flag", "3", *extra]):
            with contextlib.chdir(workdir), pytest.raises(SystemExit) as exit_info:
                run_cli(main.component, name, argv)
            err = capsys.readouterr().err.strip().splitlines()
            assert exit_info.value.code == EXIT_USER_ERROR, (name, argv)
            assert len(err) == 1 and "--bogus_flag" in err[0] and err[0].startswith(f"{name}: error:"), err
            tried += 1
    assert not list(Path(workdir).iterdir()), f"{distribution}: a rejected command wrote files"
    if server is not None:
        assert not server.requests, f"{distribution}: a rejected command sent {len(server.requests)} requests"
    return tried
