"""The D-LLM model: an HF LLaMA-family causal LM with a router per block and LoRA on q/k/v.

The forward pass is written over ``model.model.layers`` (reusing each layer's norms, projections
and MLP, and the model's rotary embedding) so that every block can be gated per token:

    w_l   = router_l(x_l)                 [B, T] in {0, 1}  (1 for l < start_layer and reserved tokens)
    f(x)  = x + Attn(norm(x); keys j with w_l[j] = 0 removed) ; f(x) + MLP(norm(f(x)))
    x_l+1 = w_l * f(x_l) + (1 - w_l) * x_l

Training removes the keys of skipping tokens after the softmax and renormalises (so the mask
passes gradient to the routers, as in the original); evaluation removes them with a boolean mask.
The two are the same function up to the 1e-6 in the renormalisation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from leanlm.core.errors import UserError
from leanlm.dllm.config import DLLMConfig
from leanlm.dllm.router import Router, decide

log = logging.getLogger(__name__)

CONFIG_FILE = "dllm_config.json"
ROUTERS_FILE = "routers.safetensors"
LORA_FILE = "lora.safetensors"


@dataclass
class DLLMOutput:
    logits: torch.Tensor  # [B, T, V]; [B, 1, V] with last_only; [N, V] at the labelled positions with labels
    execs: torch.Tensor  # [B, T, L] execute indicator per token and layer (fp32, differentiable in training)
    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    ratio_loss: torch.Tensor | None = None
    exec_ratio: float | None = None  # with labels: executed fraction over the tokens the ratio loss sees
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (k, v) [B, n_kv, T, d]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: [B, T] -> 0, 1, ... from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def block_qkv(layer: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple:
    """x [B, T, H] -> q [B, n_heads, T, d], k and v [B, n_kv, T, d] (RoPE applied to q and k)."""
    attn = layer.self_attn
    b, t, _ = x.shape
    xn = layer.input_layernorm(x)
    q = attn.q_proj(xn).view(b, t, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(xn).view(b, t, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(xn).view(b, t, -1, attn.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def block_finish(layer: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Residual + o_proj, then the MLP half. attn_out [B, n_heads, T, d] -> [B, T, H]."""
    b, _, t, _ = attn_out.shape
    h = x + layer.self_attn.o_proj(attn_out.transpose(1, 2).reshape(b, t, -1))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float
) -> torch.Tensor:
    """Scaled dot-product attention (GQA) with a boolean ``allowed`` [B, 1, Tq, Tk] (True = may attend)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=True)


def soft_masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, base: torch.Tensor, keep: torch.Tensor, scale: float
) -> torch.Tensor:
    """Training attention: softmax over ``base`` [B,1,Tq,Tk], times ``keep`` [B,1,Tq,Tk] in [0,1], renormalised.

    ``keep`` carries the routers' straight-through gradient into the attention of later tokens.
    """
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~base, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1) * keep
    probs = probs / (probs.sum(-1, keepdim=True) + 1e-6)
    return probs.to(v.dtype) @ v


class DLLM(nn.Module):
    """Routers + (optional) peft LoRA around a ``LlamaForCausalLM``-like model.

    ``self.model`` is a ``peft.PeftModel`` while LoRA is unmerged, else the plain causal LM.
    ``self.routers[str(l)]`` exists for every layer ``l >= start_layer`` when ``config.dynamic``.
    """

    def __init__(self, model: nn.Module, config: DLLMConfig, *, lora: bool = True):
        super().__init__()
        layers = _layers(model)
        self.config = config.validate(len(layers))
        hidden = model.config.hidden_size
        width = config.router_width(hidden)
        device = next(model.parameters()).device
        self.routers = nn.ModuleDict(
            {
                str(i): Router(hidden, width, config.router_bias).to(device)
                for i in range(config.start_layer, len(layers))
            }
            if config.dynamic
            else {}
        )
        if lora and config.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            peft_config = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_targets),
                bias="none",
            )
            model = get_peft_model(model, peft_config)
        self.model = model
        self.recorder: list | None = None

    # ------------------------------------------------------------------ structure

    @property
    def lm(self) -> nn.Module:
        """The underlying causal LM (``embed_tokens``, ``layers``, ``norm``, ``lm_head``)."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def layers(self) -> nn.ModuleList:
        return self.lm.model.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def device(self) -> torch.device:
        return self.lm.model.embed_tokens.weight.device

    def router(self, layer: int) -> Router | None:
        return self.routers[str(layer)] if str(layer) in self.routers else None  # noqa: SIM401 (no ModuleDict.get)

    @property
    def lora_merged(self) -> bool:
        return not hasattr(self.model, "get_base_model")

    def merge_lora(self) -> DLLM:
        """Fold LoRA into q/k/v (W += scale * B A) for inference; routers are untouched."""
        if not self.lora_merged:
            self.model = self.model.merge_and_unload()
        return self

    # ------------------------------------------------------------------ forward

    def decisions(
        self, layer: int, h: torch.Tensor, reserved: torch.Tensor, override: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Execute indicator [B, T] for ``layer`` given its input ``h`` [B, T, H]."""
        if override is not None:
            return override.to(h.device, torch.float32).expand(h.shape[:2])
        router = self.router(layer)
        if router is None:
            return torch.ones(h.shape[:2], device=h.device)
        w = decide(router(h), self.training, self.config.gumbel_tau)
        return torch.where(reserved, torch.ones_like(w), w)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        exec_override: torch.Tensor | None = None,
        lambda_now: float | None = None,
        return_kv: bool = False,
        last_only: bool = False,
        **_: Any,
    ) -> DLLMOutput:
        """Full-sequence pass. input_ids [B, T]; attention_mask [B, T] (left or right padding).

        ``exec_override`` (broadcastable to [B, T, L], 1 = execute) replaces every decision, routers and
        reserved tokens included: for ablations and static layer dropping. With ``labels`` the loss is
        ``CE(response) + lambda_now * ratio_loss`` (``lambda_now`` defaults to ``config.lambda_max``) and
        ``logits`` holds only the [N, V] predicted positions. ``last_only``: logits of the last position.
        """
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        real = attention_mask.bool()
        pos = position_ids_from_mask(attention_mask)
        lm = self.lm
        h = lm.model.embed_tokens(input_ids)
        cos, sin = lm.model.rotary_emb(h, pos)
        reserved = pos < self.config.reserve_initials
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=h.device)
        # a query may see earlier real tokens; it always sees itself so that no row is empty
        base = ((causal & real[:, None, :]) | eye)[:, None]  # [B, 1, T, T]
        override = None
        if exec_override is not None:
            override = torch.as_tensor(exec_override, device=h.device).float().expand(b, t, self.num_layers)

        execs, kv = [], []
        for i, layer in enumerate(self.layers):
            w = self.decisions(i, h, reserved, None if override is None else override[..., i])
            q, k, v = block_qkv(layer, h, cos, sin)
            scale = layer.self_attn.scaling
            if self.training:
                keep = torch.maximum(w[:, None, None, :], eye.float())
                attn = soft_masked_attention(q, k, v, base, keep, scale)
            else:
                allowed = base & ((w > 0.5)[:, None, None, :] | eye)
                attn = masked_attention(q, k, v, allowed, scale)
            out = block_finish(layer, h, attn)
            gate = w[..., None].to(h.dtype)
            h = gate * out + (1 - gate) * h if self.training else torch.where(gate > 0.5, out, h)
            execs.append(w)
            if return_kv:
                kv.append((k, v))
        h = lm.model.norm(h)
        execs_t = torch.stack(execs, dim=-1)
        if self.recorder is not None:  # evaluation helpers collect decisions from forwards they do not own
            self.recorder.append((execs_t.detach().cpu(), attention_mask.detach().cpu()))
        if labels is not None:
            # the LM head only where a label is predicted: with a 49k vocabulary it is most of the cost
            from leanlm.dllm.loss import dllm_loss, exec_ratio

            predict = labels[:, 1:] != -100
            logits = lm.lm_head(h[:, :-1][predict])  # [N, V]
            lam = self.config.lambda_max if lambda_now is None else lambda_now
            counted = real & ~reserved  # padding and the always-executed first tokens are not routed
            loss, ce, ratio = dllm_loss(logits, labels[:, 1:][predict], execs_t, counted,
                                        self.config.target, lam, dynamic=bool(self.routers),
                                        scope=self.config.ratio_scope)  # fmt: skip
            return DLLMOutput(logits=logits, execs=execs_t, loss=loss, ce_loss=ce, ratio_loss=ratio,
                              exec_ratio=float(exec_ratio(execs_t.detach(), counted)))  # fmt: skip
        logits = lm.lm_head(h[:, -1:] if last_only else h)
        return DLLMOutput(logits=logits, execs=execs_t, kv=kv if return_kv else None)

    # ------------------------------------------------------------------ save / load

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Routers and (unmerged) LoRA weights: everything D-LLM adds to the base model."""
        state = {f"routers.{k}": v for k, v in self.routers.state_dict().items()}
        if not self.lora_merged:
            state |= {f"lm.{k}": v for k, v in self.lm.state_dict().items() if "lora_" in k}
        return state

    def save(self, folder: str | Path) -> Path:
        """Write ``dllm_config.json``, ``routers.safetensors`` and ``lora.safetensors`` (small: no base weights)."""
        from safetensors.torch import save

        from leanlm.core.records import atomic_path, write_json

        if self.lora_merged and self.config.lora_rank > 0:
            raise UserError("LoRA is already merged into the base weights; save before merge_lora()")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.trainable_state().items()}
        for name, prefix in ((ROUTERS_FILE, "routers."), (LORA_FILE, "lm.")):
            part = {k: v for k, v in state.items() if k.startswith(prefix)}
            with atomic_path(folder / name, mode="wb") as f:
                f.write(save(part))
        write_json(folder / CONFIG_FILE, {"dllm": self.config.to_dict(), "num_layers": self.num_layers})
        return folder

    @classmethod
    def from_base(cls, model: nn.Module, config: DLLMConfig | None = None, *, lora: bool = True) -> DLLM:
        return cls(model, config or DLLMConfig(), lora=lora)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        model: nn.Module | str | None = None,
        *,
        merge: bool = True,
        dtype: Any = None,
        device: str | None = None,
    ) -> DLLM:
        """Rebuild a saved D-LLM on its base model (``model``: a loaded model, a name, or the saved name)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists():
            raise UserError(
                f"{folder}: not a D-LLM folder (no {CONFIG_FILE}); pass the folder dllm-finetune wrote"
            )
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = DLLMConfig.from_dict(meta["dllm"])
        if model is None or isinstance(model, str):
            from leanlm.core.models import load_model

            model = load_model(model or config.base_model, dtype=dtype, device=device)
        if len(_layers(model)) != meta["num_layers"]:
            raise UserError(
                f"{folder} was trained on a {meta['num_layers']}-layer model, the base model has {len(_layers(model))}"
            )
        dllm = cls(model, config, lora=config.lora_rank > 0)
        state = {}
        for name in (ROUTERS_FILE, LORA_FILE):
            if (folder / name).exists():
                state |= load_file(str(folder / name))
        expected = dllm.trainable_state()
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if missing or unexpected:
            raise UserError(
                f"{folder}: weights do not match the config (missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]})"
            )
        with torch.no_grad():
            for key, target in expected.items():
                target.copy_(state[key].to(target.dtype))
        dllm.eval()
        return dllm.merge_lora() if merge else dllm


def _layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} is not a LLaMA-family causal LM (no model.layers)")
    return layers
