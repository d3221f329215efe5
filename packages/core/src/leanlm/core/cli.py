"""The one wrapper every leanlm console script goes through.

``run_cli(component, name)``: fire builds the command line (``--help`` works on every command and
subcommand), logging goes to stderr, and a ``UserError`` (or a missing file) prints one line
``<name>: error: <message>`` and exits with code 2: no traceback for mistakes a user can fix.
Set ``LEANLM_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from leanlm.core.errors import UserError

EXIT_USER_ERROR = 2


def setup_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("LEANLM_LOG_LEVEL") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "urllib3", "filelock", "datasets", "openai._base_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(name: str, message: str) -> NoReturn:
    print(f"{name}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def run_cli(component: Callable[..., Any] | Any, name: str, argv: list[str] | None = None) -> Any:
    """Run ``component`` as a fire command line named ``name``."""
    import fire

    setup_logging()
    try:
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
        run_cli(component, name)

    main.__name__ = f"{name.replace('-', '_')}_main"
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
