"""D-LLM hyperparameters (defaults follow the original training script) and their validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from leanlm.core.errors import UserError


@dataclass
class DLLMConfig:
    """Routers on blocks ``>= start_layer``; the first ``reserve_initials`` tokens always execute.

    ``target`` is the executed fraction of layers each token is pulled toward (layers below
    ``start_layer`` count as executed). ``router_hidden=None`` means ``hidden_size // 8`` capped at
    512 (the original used 512 for hidden 4096). LoRA uses ``alpha == rank``, i.e. scale 1, like the
    original. ``dynamic=False`` builds no routers: a plain LoRA model (the dense baseline).
    """

    start_layer: int = 2
    reserve_initials: int = 2
    target: float = 0.5
    lambda_max: float = 5.0
    # fraction of training over which lambda ramps up to lambda_max (1.0: the whole run, the original)
    lambda_ramp: float = 1.0
    # what the ratio loss pulls toward the target: every token's ratio ("token", the original) or
    # the batch mean ("batch": tokens may differ, only the average compute is held)
    ratio_scope: str = "token"
    router_hidden: int | None = None
    router_bias: tuple[float, float] = (0.1, 2.0)  # (skip, execute) logits bias: start near "execute"
    gumbel_tau: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    dynamic: bool = True
    base_model: str = "default"

    def validate(self, num_layers: int | None = None) -> DLLMConfig:
        if not 0.0 < self.target <= 1.0:
            raise UserError(f"target execution ratio must be in (0, 1], got {self.target}")
        if self.reserve_initials < 0:
            raise UserError(f"reserve_initials must be >= 0, got {self.reserve_initials}")
        if self.start_layer < 0:
            raise UserError(f"start_layer must be >= 0, got {self.start_layer}")
        if num_layers is not None and self.dynamic and self.start_layer >= num_layers:
            raise UserError(
                f"start_layer {self.start_layer} is beyond the model's depth: it has {num_layers} layers "
                f"(0..{num_layers - 1}), so no router would be created"
            )
        if self.lambda_max < 0:
            raise UserError(f"lambda_max must be >= 0, got {self.lambda_max}")
        if not 0.0 < self.lambda_ramp <= 1.0:
            raise UserError(f"lambda_ramp (fraction of training) must be in (0, 1], got {self.lambda_ramp}")
        if self.ratio_scope not in ("token", "batch"):
            raise UserError(f"ratio_scope must be 'token' or 'batch', got {self.ratio_scope!r}")
        if self.lora_rank < 0:
            raise UserError(f"lora_rank must be >= 0 (0 = no LoRA), got {self.lora_rank}")
        return self

    def router_width(self, hidden_size: int) -> int:
        return self.router_hidden or max(8, min(512, hidden_size // 8))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["router_bias"] = list(self.router_bias)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DLLMConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"unknown D-LLM config keys: {', '.join(sorted(unknown))}")
        d = dict(d)
        for key in ("router_bias", "lora_targets"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
