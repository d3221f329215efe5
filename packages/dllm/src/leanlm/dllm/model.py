"""The D-LLM model: an HF causal LM with a router per block and LoRA on q/k/v.

The forward pass walks ``model.model.layers`` and calls each HF decoder layer itself (its norms,
projections, q/k norms, MLP: whatever the architecture has), with the layer's attention routed
through ``leanlm_dllm``, an HF attention interface that applies D-LLM's masks. So every block can
be gated per token:

    w_l   = router_l(x_l)                 [B, T] in {0, 1}  (1 for l < start_layer and reserved tokens)
    f(x)  = layer_l(x) with the keys j with w_l[j] = 0 removed from its attention
    x_l+1 = w_l * f(x_l) + (1 - w_l) * x_l

Training removes the keys of skipping tokens after the softmax and renormalises (so the mask
passes gradient to the routers, as in the original); evaluation removes them with a boolean mask.
The two are the same function up to the 1e-6 in the renormalisation. Sliding windows (Mistral,
Qwen2, Gemma2, Phi-3) and attention soft-capping (Gemma2) come from the kwargs HF's attention
modules pass; final-logit soft-capping (Gemma2) is applied by ``DLLM.head``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.sft import IGNORE_INDEX
from leanlm.dllm.config import DLLMConfig
from leanlm.dllm.router import Router, decide

log = logging.getLogger(__name__)

CONFIG_FILE = "dllm_config.json"
ROUTERS_FILE = "routers.safetensors"
LORA_FILE = "lora.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"  # peft's names: PeftModel.from_pretrained(base, folder) loads these
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"


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


SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")
SUPPORTED_NAMES = "Llama (LLaMA-2, Llama-3, TinyLlama, SmolLM2), Qwen2, Qwen3, Mistral, Gemma, Gemma2, Phi-3"
ATTN_IMPL = "leanlm_dllm"


def _unsupported(got: str) -> UserError:
    return UserError(
        f"D-LLM supports {SUPPORTED_NAMES} (model_type {', '.join(SUPPORTED_MODEL_TYPES)}); got {got}"
    )


PACKED_REFUSAL = (
    "D-LLM trains LoRA adapters on the base's linear layers and routers on its float activations; "
    "{what} is a packed low-bit export, whose layers it cannot adapt: pass the float model or the "
    "BitDistiller QAT checkpoint instead"
)


def check_supported(model: nn.Module) -> str:
    """The model's ``model_type`` if D-LLM handles its blocks, else one UserError naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(model_type or type(model).__name__)
    if any(type(m).__name__ == "PackedLinear" for m in model.modules()):
        raise UserError(PACKED_REFUSAL.format(what="this model"))
    return model_type


def check_supported_name(name: str) -> None:
    """Refuse an unsupported local model folder before anything loads (reads its config.json only)."""
    from leanlm.core.models import resolve_model
    from leanlm.core.packed import is_packed_folder

    r = resolve_model(name)
    config = Path(r.location) / "config.json"
    if r.kind in ("local", "checkpoint") and config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise _unsupported(f"{model_type} ({name})")
        if is_packed_folder(r.location):
            raise UserError(PACKED_REFUSAL.format(what=name))


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    scale: float,
    softcap: float | None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of q [B, nh, Tq, d] over k, v [B, nkv, Tk, d] (GQA) -> [B, nh, Tq, d].

    ``allowed`` [B, 1, Tq, Tk] (True = may attend); ``softcap``: scores -> c * tanh(scores / c)
    (Gemma2). ``keep`` [B, 1, Tq, Tk] in [0, 1] (training): softmax over ``allowed``, times ``keep``,
    renormalised, which carries the routers' straight-through gradient into later tokens' attention.
    """
    if keep is None and softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale, enable_gqa=True)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores.float(), dim=-1)
    if keep is not None:
        probs = probs * keep
        probs = probs / (probs.sum(-1, keepdim=True) + 1e-6)
    return probs.to(v.dtype) @ v


def _window(allowed: torch.Tensor, q_idx: torch.Tensor, k_idx: torch.Tensor, window: int) -> torch.Tensor:
    """Restrict ``allowed`` [..., Tq, Tk] to HF's sliding window: key index > query index - window."""
    return allowed & (k_idx[None, :] > q_idx[:, None] - window)


@dataclass
class AttentionPlan:
    """What the D-LLM attention does inside one HF decoder-layer call (passed down as ``dllm_plan``).

    ``full``: a whole sequence. ``base`` [B, 1, T, T] (causal over real keys, plus the diagonal so no
    row is empty), ``w`` [B, T] this layer's decisions (keys of tokens with w = 0 are removed: softly
    with ``soft``, else by the boolean mask), ``kv`` collects (k, v) [B, nkv, T, d] when not None.
    ``decode``: one new token per row in ``rows`` (None: every row) at cache ``slot`` of ``layer``:
    its K/V are written there, valid is set, and it attends over the valid slots up to ``slot``.
    """

    mode: str
    base: torch.Tensor | None = None
    w: torch.Tensor | None = None
    soft: bool = False
    kv: list | None = None
    cache: Any = None
    layer: int = 0
    slot: int = 0
    rows: torch.Tensor | None = None

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        window: int | None,
        softcap: float | None,
    ) -> torch.Tensor:
        """q [B, nh, T, d], k/v [B, nkv, T, d] (after the layer's norms and RoPE) -> [B, nh, T, d]."""
        if self.mode == "decode":
            return self._decode(q, k, v, scale, window, softcap)
        if self.kv is not None:
            self.kv.append((k, v))
        t = q.shape[2]
        base = self.base
        if window:
            idx = torch.arange(t, device=q.device)
            base = _window(base, idx, idx, window)
        eye = torch.eye(t, dtype=torch.bool, device=q.device)
        if self.soft:
            keep = torch.maximum(self.w[:, None, None, :], eye.float())
            return _attend(q, k, v, base, scale, softcap, keep)
        allowed = base & ((self.w > 0.5)[:, None, None, :] | eye)
        return _attend(q, k, v, allowed, scale, softcap)

    def _decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
        window: int | None,
        softcap: float | None,
    ) -> torch.Tensor:
        c, i, s, rows = self.cache, self.layer, self.slot, self.rows
        if rows is None:  # common batch-1 case: plain slices, no gather/scatter
            c.k[i][:, :, s], c.v[i][:, :, s] = k[:, :, 0], v[:, :, 0]
            c.valid[i, :, s] = True
            keys, values, valid = c.k[i][:, :, : s + 1], c.v[i][:, :, : s + 1], c.valid[i][:, : s + 1]
        else:
            c.k[i][rows, :, s], c.v[i][rows, :, s] = k[:, :, 0], v[:, :, 0]
            c.valid[i, rows, s] = True
            keys, values, valid = (
                c.k[i][rows, :, : s + 1],
                c.v[i][rows, :, : s + 1],
                c.valid[i][rows, : s + 1],
            )
        allowed = valid[:, None, None, :]  # [b, 1, 1, s+1]
        if window:  # HF's sliding window: slots > s - window (no extra kernels on the common path)
            allowed = allowed & (torch.arange(s + 1, device=q.device) > s - window)
        return _attend(q, keys, values, allowed, scale, softcap)


def _dllm_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    dllm_plan: AttentionPlan | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """An HF attention interface: the layer's own projections, norms and RoPE ran before this call.

    HF's ``attention_mask`` is ignored (D-LLM builds its own from the routers); attention dropout is
    not applied (0 in every supported config). Returns [B, T, nh, d] as HF's interfaces do.
    """
    if dllm_plan is None:
        raise RuntimeError("the leanlm_dllm attention runs only inside a D-LLM forward")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = dllm_plan.attend(query, key, value, scale, sliding_window, softcap)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPL, _dllm_attention)


@contextlib.contextmanager
def dllm_attention(layers: nn.ModuleList) -> Iterator[None]:
    """Route the HF layers' attention through ``_dllm_attention`` for the duration (restored after,
    so the same model called outside a D-LLM forward is plain HF again)."""
    configs = {id(layer.self_attn.config): layer.self_attn.config for layer in layers}
    old = {key: c._attn_implementation for key, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = ATTN_IMPL
        yield
    finally:
        for key, c in configs.items():
            c._attn_implementation = old[key]


def run_layer(
    layer: nn.Module, h: torch.Tensor, position_embeddings: tuple, plan: AttentionPlan
) -> torch.Tensor:
    """One HF decoder layer on h [B, T, H] (its norms, projections, MLP), attention as ``plan`` says."""
    out = layer(h, attention_mask=None, position_embeddings=position_embeddings, dllm_plan=plan)
    return out[0] if isinstance(out, tuple) else out


def _lora_targets(model: nn.Module, targets: tuple[str, ...]) -> tuple[str, ...]:
    """The default q/k/v targets on a fused ``qkv_proj`` model (Phi-3) become the fused projection."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    if targets == ("q_proj", "k_proj", "v_proj") and "q_proj" not in names and "qkv_proj" in names:
        return ("qkv_proj",)
    return targets


class DLLM(nn.Module):
    """Routers + (optional) peft LoRA around an HF causal LM of ``SUPPORTED_MODEL_TYPES``.

    Phi-3's fused ``qkv_proj`` takes the LoRA the q/k/v projections get elsewhere.

    ``self.model`` is a ``peft.PeftModel`` while LoRA is unmerged, else the plain causal LM.
    ``self.routers[str(l)]`` exists for every layer ``l >= start_layer`` when ``config.dynamic``.
    """

    def __init__(self, model: nn.Module, config: DLLMConfig, *, lora: bool = True):
        super().__init__()
        check_supported(model)  # before anything else: one line naming the supported architectures
        layers = _layers(model)
        _register_attention()
        config = dataclasses.replace(config, lora_targets=_lora_targets(model, tuple(config.lora_targets)))
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

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states [..., H] (after the model's norm) -> logits [..., V], soft-capped where
        the model does it (Gemma2: c * tanh(logits / c))."""
        logits = self.lm.lm_head(h)
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

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
        h = lm.model.embed_tokens(input_ids)  # Gemma's embedding module applies its sqrt(H) scale itself
        pe = lm.model.rotary_emb(h, pos)
        reserved = pos < self.config.reserve_initials
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=h.device)
        # a query may see earlier real tokens; it always sees itself so that no row is empty
        base = ((causal & real[:, None, :]) | eye)[:, None]  # [B, 1, T, T]
        override = None
        if exec_override is not None:
            override = torch.as_tensor(exec_override, device=h.device).float().expand(b, t, self.num_layers)

        execs, kv = [], []
        with dllm_attention(self.layers):
            for i, layer in enumerate(self.layers):
                w = self.decisions(i, h, reserved, None if override is None else override[..., i])
                plan = AttentionPlan("full", base=base, w=w, soft=self.training, kv=kv if return_kv else None)
                out = run_layer(layer, h, pe, plan)
                gate = w[..., None].to(h.dtype)
                h = gate * out + (1 - gate) * h if self.training else torch.where(gate > 0.5, out, h)
                execs.append(w)
        h = lm.model.norm(h)
        execs_t = torch.stack(execs, dim=-1)
        if labels is not None:
            counted = real & ~reserved  # padding and the always-executed first tokens are not routed
            return self._with_loss(h, labels, execs_t, counted, lambda_now)
        logits = self.head(h[:, -1:] if last_only else h)
        return DLLMOutput(logits=logits, execs=execs_t, kv=kv if return_kv else None)

    def _with_loss(
        self,
        h: torch.Tensor,
        labels: torch.Tensor,
        execs: torch.Tensor,
        counted: torch.Tensor,
        lambda_now: float | None,
    ) -> DLLMOutput:
        """loss = CE(response) + lambda * ratio_loss, from the final hidden states h [B, T, H], labels
        [B, T], decisions execs [B, T, L] and the routed tokens ``counted`` [B, T] (bool); the output's
        logits are [N, V], at the N positions whose next token is labelled."""
        from leanlm.dllm.loss import dllm_loss, exec_ratio

        # the LM head only where a label is predicted: with a 49k vocabulary it is most of the cost
        predict = labels[:, 1:] != IGNORE_INDEX
        logits = self.head(h[:, :-1][predict])  # [N, V]
        lam = self.config.lambda_max if lambda_now is None else lambda_now
        loss, ce, ratio = dllm_loss(
            logits,
            labels[:, 1:][predict],
            execs,
            counted,
            self.config.target,
            lam,
            dynamic=bool(self.routers),
            scope=self.config.ratio_scope,
        )
        ratio_now = float(exec_ratio(execs.detach(), counted))
        return DLLMOutput(logits, execs, loss=loss, ce_loss=ce, ratio_loss=ratio, exec_ratio=ratio_now)

    # ------------------------------------------------------------------ save / load

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Routers and (unmerged) LoRA weights: everything D-LLM adds to the base model."""
        state = {f"routers.{k}": v for k, v in self.routers.state_dict().items()}
        if not self.lora_merged:
            state |= {f"lm.{k}": v for k, v in self.lm.state_dict().items() if "lora_" in k}
        return state

    def save(self, folder: str | Path) -> Path:
        """Write ``dllm_config.json``, ``routers.safetensors`` and ``lora.safetensors`` (small: no base
        weights), and with LoRA also peft's ``adapter_config.json`` + ``adapter_model.safetensors``, so
        ``peft.PeftModel.from_pretrained(base, folder)`` gives the model with every block executed."""
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
        if not self.lora_merged:
            self._save_peft_adapter(folder)
        write_json(folder / CONFIG_FILE, {"dllm": self.config.to_dict(), "num_layers": self.num_layers})
        return folder

    def _save_peft_adapter(self, folder: Path) -> None:
        """peft's adapter files, written by peft's own state-dict and config functions (its key names)."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save

        from leanlm.core.records import atomic_path, write_json

        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}
        with atomic_path(folder / PEFT_WEIGHTS_FILE, mode="wb") as f:
            f.write(save(weights, metadata={"format": "pt"}))
        config = self.model.peft_config["default"].to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
        base = _base_location(self.config.base_model, self.lm)
        config |= {"base_model_name_or_path": base, "task_type": "CAUSAL_LM", "inference_mode": True}
        write_json(folder / PEFT_CONFIG_FILE, config)

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


def _base_location(name: str, model: nn.Module) -> str:
    """What peft records as the base: where the model was loaded from (as peft does: the config's
    ``_name_or_path``, a folder made absolute), else where the configured base name resolves."""
    from leanlm.core.models import resolve_model

    loaded = str(getattr(model.config, "_name_or_path", "") or "")
    if loaded:
        return str(Path(loaded).resolve()) if Path(loaded).exists() else loaded
    try:
        r = resolve_model(name)
    except UserError:
        return name
    return (
        str(Path(r.location).resolve())
        if r.kind in {"local", "checkpoint", "embedded"}
        else r.location or name
    )


def _layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} is not a LLaMA-family causal LM (no model.layers)")
    return layers
