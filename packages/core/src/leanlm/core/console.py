"""The one fire wrapper every leanlm console script goes through (the `leanlm` command itself is `leanlm_command`).

``run_cli(component, name)``: fire builds the command line (``--help`` works on every command and
subcommand), logging goes to stderr, and a ``UserError`` (or a missing file) prints one line
``<name>: error: <message>`` and exits with code 2: no traceback for mistakes a user can fix.
Set ``LEANLM_DEBUG=1`` to see the traceback anyway.

fire passes flags it does not know on to the command (or ignores them), so a typo would run the
command with its defaults: ``check_flags`` compares every ``--flag`` with the signature of the
function the command line reaches and rejects an unknown one before anything runs.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from leanlm.core.errors import UserError
from leanlm.core.flags import check_flag_values

EXIT_USER_ERROR = 2


def setup_logging(level: str | None = None) -> None:
    """leanlm's own loggers at ``level`` (``$LEANLM_LOG_LEVEL``, default INFO); other libraries' at
    WARNING (a request log line per HTTP call would bury the one line that matters), unless DEBUG."""
    name = (level or os.environ.get("LEANLM_LOG_LEVEL") or "INFO").upper()
    chosen = getattr(logging, name, logging.INFO)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger().setLevel(logging.DEBUG if chosen <= logging.DEBUG else logging.WARNING)
    logging.getLogger("leanlm").setLevel(chosen)


def fail(name: str, message: str) -> NoReturn:
    print(f"{name}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


# fire's own flags, valid after a lone ``--`` (and --help/-h anywhere).
FIRE_FLAGS = {"help", "interactive", "trace", "verbose", "separator", "completion"}


def _target(component: Any, positionals: list[str]) -> tuple[Any, list[Any]]:
    """The callable the command line reaches, and the callables whose parameters it may name.

    fire walks attributes with the positional words (``leanlm demo``, ``lion-weight-diff make``);
    a class contributes its ``__init__`` parameters and then its methods.
    """
    scopes: list[Any] = []
    target = component
    words = list(positionals)
    while True:
        if inspect.isclass(target) and target.__init__ is not object.__init__:
            scopes.append(target.__init__)
        if inspect.isroutine(target):
            scopes.append(target)
            return target, scopes
        if not words or words[0].startswith("_") or not hasattr(target, words[0]):
            return target, scopes
        target = getattr(target, words.pop(0))


def _parameters(fn: Any) -> tuple[set[str], bool]:
    """(parameter names, whether it takes ``**kwargs``) of ``fn``; self/cls are not flags."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)} - {"self", "cls"}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_flags(component: Any, argv: list[str]) -> None:
    """Raise a UserError naming the first ``--flag`` that the reached function does not take.

    ``--name=value``, ``--name value``, ``--name-with-dashes`` and fire's ``--noname`` (False) are
    understood; a value such as ``-5`` is not a flag. Flags after a lone ``--`` are fire's own.
    """
    if "--" in argv:
        argv = argv[: argv.index("--")]
    if any(a in ("--help", "-h") for a in argv):
        return
    flags = [a for a in argv if a.startswith("--") and len(a) > 2]
    first_flag = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    positionals = argv[:first_flag]  # the words before the first flag select a subcommand
    _, scopes = _target(component, positionals)
    valid: set[str] = set()
    for fn in scopes:
        names, takes_kwargs = _parameters(fn)
        if takes_kwargs:
            return
        valid |= names
    for flag in flags:
        key = flag[2:].split("=", 1)[0].replace("-", "_")
        if key in valid or (key.startswith("no") and key[2:] in valid):
            continue
        hint = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
        raise UserError(
            f"unknown flag --{key}"
            + (f"; did you mean --{hint[0]}?" if hint else "; see --help for the flags")
        )


def run_cli(component: Callable[..., Any] | Any, name: str, argv: list[str] | None = None) -> Any:
    """Run ``component`` as a fire command line named ``name`` (flags checked first: ``check_flags``)."""
    import fire

    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_flags(component, argv)
        check_flag_values(argv)
        return fire.Fire(component, command=argv, name=name)
    except UserError as e:
        if os.environ.get("LEANLM_DEBUG"):
            raise
        fail(name, str(e))
    except FileNotFoundError as e:
        if os.environ.get("LEANLM_DEBUG"):
            raise
        fail(name, f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    except KeyboardInterrupt:
        print(f"{name}: interrupted; finished records are saved, re-run to resume", file=sys.stderr)
        raise SystemExit(130) from None


def entry(component: Callable[..., Any] | Any, name: str) -> Callable[[], None]:
    """A zero-argument function for ``[project.scripts]``: ``bita-train = "...cli:train_main"``."""

    def main() -> None:
        from leanlm.core.distributed import release_process_group

        try:
            run_cli(component, name)
        finally:
            release_process_group()  # a rank of a torchrun job exits cleanly

    main.__name__ = f"{name.replace('-', '_')}_main"
    main.component = component  # type: ignore[attr-defined]  # for tests that drive every script
    main.cli_name = name  # type: ignore[attr-defined]
    return main


def parse_bool(value: Any, what: str = "value") -> bool:
    """fire passes 'true'/'false' strings through sometimes; accept them, reject anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "on"}:
        return True
    if text in {"0", "false", "no", "n", "off"}:
        return False
    raise UserError(f"{what} must be true or false, got {value!r}")
