"""Model surgery: swap a model's ``nn.Linear`` layers for SwitchBack layers, and back.

The new layer shares the old one's ``weight``/``bias`` Parameter objects (no copy), so tied weights,
optimizer state and checkpoints keep working, and ``unswap_linear_layers`` restores plain
``nn.Linear`` modules holding the same Parameters.

The swap is core's ``swap_linears`` with its one exclusion rule (fnmatch on the full name or a
dotted suffix of it). Default exclusions: ``lm_head`` (the seed project's own SwitchBack run with
``lm_head`` in int8 diverged, train loss 7.15 vs 1.50; torchao and torchtune also keep it in
float) and ``k_proj``/``v_proj`` (the seed's choice; with GQA they are narrow, e.g. 2048 -> 256,
where int8 does not pay).

Fused projections (Phi-3's ``qkv_proj``, ``gate_up_proj``) hold several of those layers in one
matrix: a fused layer stays in float when any of its parts is excluded (so Phi-3 keeps q, k and v
in float under the defaults), and a one-line notice says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.swap import excluded, parse_patterns, swap_linears
from leanlm.switchback.layers import StandardLinear, SwitchBackLinear, variant_class

DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head", "k_proj", "v_proj")
SWAPPED_TYPES = (SwitchBackLinear, StandardLinear)
# fused projection -> the separate layers it stands for (their exclusion rules apply to it)
FUSED: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}

log = logging.getLogger(__name__)


def parse_exclude(exclude: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"lm_head,k_proj"`` or a list -> a tuple of patterns; None -> the defaults; "" or "none" -> nothing."""
    return DEFAULT_EXCLUDE if exclude is None else parse_patterns(exclude)


def _fused_parts_excluded(name: str, patterns: tuple[str, ...]) -> list[str]:
    """For a fused projection, the parts whose own name the patterns exclude (else [])."""
    parent, _, last = name.rpartition(".")
    parts = FUSED.get(last, ())
    return [p for p in parts if excluded(f"{parent}.{p}" if parent else p, patterns)]


def _rebuild(old: nn.Linear, cls: type[nn.Linear]) -> nn.Linear:
    # built on the meta device so nothing is allocated, then handed the old Parameters
    new = cls(old.in_features, old.out_features, bias=old.bias is not None, device="meta")
    new.weight = old.weight
    new.bias = old.bias
    new.train(old.training)
    return new


def swap_linear_layers(
    model: nn.Module,
    variant: str = "global",
    exclude: str | Iterable[str] | None = None,
) -> list[str]:
    """Replace every ``nn.Linear`` not matching ``exclude`` by the ``variant`` layer; returns the swapped names.

    Patterns follow core's one rule (``leanlm.core.swap.excluded``): fnmatch on the full name or a
    dotted suffix of it, so ``k_proj`` names every k_proj and ``model.layers.0.*`` one block.
    """
    cls = variant_class(variant)
    patterns = parse_exclude(exclude)
    kept_fused: dict[str, list] = {}

    def plain_and_not_fused_away(module: nn.Module, name: str) -> bool:
        if type(module) is not nn.Linear:  # exactly nn.Linear: already-swapped layers stay as they are
            return False
        parts = _fused_parts_excluded(name, patterns)
        if parts:
            kept = kept_fused.setdefault(name.rsplit(".", 1)[-1], [0, parts])
            kept[0] += 1
        return not parts

    swapped = swap_linears(model, lambda m: _rebuild(m, cls), plain_and_not_fused_away, exclude=patterns)
    for fused, (count, parts) in kept_fused.items():
        which = "/".join(parts) + (" is" if len(parts) == 1 else " are")
        log.warning(
            "%s fuses %s: %d such layers kept in float because %s excluded",
            fused,
            "/".join(FUSED[fused]),
            count,
            which,
        )
    if not swapped:  # nothing was changed
        raise UserError(
            f"no nn.Linear layer left to swap in {type(model).__name__} (exclude={list(patterns)})"
        )
    return swapped


def unswap_linear_layers(model: nn.Module) -> list[str]:
    """Turn every SwitchBack/Standard layer back into ``nn.Linear`` (same Parameters); returns the names."""

    def to_plain(module: nn.Module) -> nn.Linear:
        if module.weight is None:  # prepare_for_eval freed it: rebuild a float weight from the int8 copy
            scale = module.weight_scale.float()
            scale = scale[:, None] if scale.dim() == 1 else scale
            dtype = module.bias.dtype if module.bias is not None else torch.float32
            module.weight = nn.Parameter((module.weight_int8.float() * scale / 127.0).to(dtype))
        return _rebuild(module, nn.Linear)

    return swap_linears(model, to_plain, lambda m, _: isinstance(m, SWAPPED_TYPES))


def count_swapped(model: nn.Module) -> dict[str, int]:
    """How many layers of each class the model holds (for logs and reports)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    return counts
