"""Console commands built from a dataclass: each flag is a field, stated once.

``config_command(Config, run)`` returns the function a console script hands to fire. Its
signature is Config's fields (what ``--help`` lists and what ``check_flags`` accepts, with the
fields' defaults); called, it coerces each value to its field's type, builds ``Config`` and
returns ``run(config)``. The library function takes the typed config, so neither the CLI nor the
library restates the other's parameter list, as torchtune's recipe configs and HF's
``HfArgumentParser`` dataclasses do.

Coercion is the one place command-line strings become typed values: fire leaves ``--train true``
a string and ``--num 3.0`` a float, and parses ``--model 7`` as an int. A value that does not fit
its field is a ``UserError`` naming the flag (one line, exit 2, before any work).

Help text per field: ``flag(default, "what it is")`` (stored as ``metadata["help"]``); the ``--help``
page is the run function's docstring followed by an ``Args:`` section fire understands.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from leanlm.core.errors import UserError

C = TypeVar("C")
R = TypeVar("R")


def flag(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its ``--help`` text: ``epochs: float = flag(3.0, "passes over the data")``."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), allows_none
    return annotation, False


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """``value`` (as fire parsed it) as the type ``annotation`` names; UserError naming ``--name``."""
    from leanlm.core.console import parse_bool

    kind, allows_none = _optional(annotation)
    if value is None:
        if allows_none:
            return None
        raise UserError(f"--{name} needs a value")
    # "--limit none" is no limit; for a text field "none" may be a value (--report_to none, --exclude none)
    if isinstance(value, str) and allows_none and kind is not str and value.strip().lower() == "none":
        return None
    if kind is bool:
        return parse_bool(value, f"--{name}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise UserError(f"--{name} must be an integer, got {value!r}") from None
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise UserError(f"--{name} must be a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, list | tuple):  # fire reads "a,b" as a tuple
            return ",".join(str(v) for v in value)
        return str(value)
    if kind is Path:
        return Path(str(value))
    return value


def fields_for(source: Any, target: type) -> dict[str, Any]:
    """``source``'s values (any object) for the fields the dataclass ``target`` has by the same name.

    How a command's flags reach the typed pieces it builds: ``RECIPE.override(**fields_for(opts,
    TrainFlags))``, ``BackendSpec(**fields_for(opts, BackendSpec))``."""
    return {f.name: getattr(source, f.name) for f in dataclasses.fields(target) if hasattr(source, f.name)}


def _field_help(cls: type) -> list[str]:
    lines = []
    for f in dataclasses.fields(cls):
        text = f.metadata.get("help", "")
        lines.append(f"    {f.name}: {text}".rstrip())
    return lines


def config_command(cls: type[C], run: Callable[[C], R], doc: str | None = None) -> Callable[..., R]:
    """A fire-callable whose flags are ``cls``'s fields; it returns ``run(cls(**coerced flags))``.

    Fields without a default are positional too (``lion-iterate POOL RUN_DIR``); ``doc`` (default:
    ``run``'s docstring) heads the ``--help`` page, followed by each field's help.
    """
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=hints[f.name]))
    signature = inspect.Signature(params)

    def command(*args: Any, **kwargs: Any) -> R:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise UserError(str(e)) from None
        bound.apply_defaults()
        values = {k: coerce(v, hints[k], k) for k, v in bound.arguments.items()}
        return run(cls(**values))

    summary = inspect.cleandoc(doc or run.__doc__ or cls.__doc__ or "")
    command.__doc__ = summary + "\n\nArgs:\n" + "\n".join(_field_help(cls))
    command.__signature__ = signature  # type: ignore[attr-defined]  # what fire and check_flags read
    command.__name__ = getattr(run, "__name__", "command")
    command.__qualname__ = command.__name__
    command.__module__ = getattr(run, "__module__", __name__)
    command._config = cls  # type: ignore[attr-defined]  # underscored: fire would list it as a subcommand
    command._run = run  # type: ignore[attr-defined]
    return command
