"""One module-swap API for the methods that replace a model's linear layers (quantization, int8 training).

``swap_linears(model, make_layer, filter_fn, exclude=...)`` is shaped like torchao's
``quantize_(model, config, filter_fn)``: every submodule that ``filter_fn(module, name)`` accepts
(default: any ``nn.Linear``) and that no ``exclude`` pattern names is replaced, in place, by
``make_layer(module)``; the names handed to ``make_layer`` are returned in model order.

One exclusion rule for every method (``excluded``): a pattern is an fnmatch pattern on the full
dotted module name, anchored at a name boundary on the left, so it matches the full name or any
dotted suffix of it. ``"lm_head"`` and ``"*.k_proj"`` name what they say; a bare ``"k_proj"``
names every ``k_proj`` (``model.layers.3.self_attn.k_proj`` ends in ``.k_proj``); and
``"model.layers.0.*"`` names everything in block 0. Matching is case-sensitive.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

FilterFn = Callable[[nn.Module, str], bool]


def parse_patterns(patterns: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"lm_head, *.k_proj"`` or a list -> a tuple of patterns; None, "" and "none" -> ``()``."""
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        if patterns.strip().lower() in {"", "none"}:
            return ()
        return tuple(p.strip() for p in patterns.split(",") if p.strip())
    return tuple(str(p) for p in patterns)


def excluded(name: str, patterns: Iterable[str]) -> bool:
    """Whether a pattern matches ``name`` or one of its dotted suffixes (see the module docstring)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*.{p}") for p in patterns)


def is_linear(module: nn.Module, name: str) -> bool:  # noqa: ARG001
    """The default filter: every ``nn.Linear``, subclasses included (torchao's default too)."""
    return isinstance(module, nn.Linear)


def find_modules(
    model: nn.Module, filter_fn: FilterFn | None = None, exclude: Iterable[str] = ()
) -> list[tuple[str, nn.Module]]:
    """``(full name, module)`` of every submodule ``filter_fn`` accepts and ``exclude`` does not name.

    A matched module's own submodules are not visited (it is replaced whole), and a module reachable
    under two names (tied) is listed once, under its first name. The root module is never listed.
    """
    accept = filter_fn or is_linear
    patterns = tuple(exclude)
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer, _ in found[-1:]):
            continue
        if not excluded(name, patterns) and accept(module, name):
            found.append((name, module))
    return found


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``name`` inside ``model`` (its parent must exist)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def swap_linears(
    model: nn.Module,
    make_layer: Callable[[nn.Module], nn.Module],
    filter_fn: FilterFn | None = None,
    *,
    exclude: Iterable[str] = (),
) -> list[str]:
    """Replace, in place, every module ``find_modules`` yields by ``make_layer(module)``; returns their names.

    ``make_layer`` may return the module itself (changed in place, e.g. a new quantization spec):
    then nothing is swapped at that name, but the name is still returned.
    """
    targets = find_modules(model, filter_fn, exclude)
    for name, module in targets:
        new = make_layer(module)
        if new is not module:
            set_submodule(model, name, new)
    return [name for name, _ in targets]
