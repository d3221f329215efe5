"""The BiTA adapter: M mask embeddings and a P-token deep prefix around a frozen causal LM.

Trainable tensors (everything else stays frozen):

* ``mask_embeddings`` ``[M, H]``: input embeddings of the mask ids ``V .. V+M-1`` (V = vocab size).
  The vocabulary, tokenizer and LM head are not resized; mask ids exist on the input side only.
* ``prefix`` ``[P, L, 2, n_kv, d]``: per-layer keys and values (P-Tuning v2 style), stored with the
  base model's number of KV heads (GQA: attention repeats them like any cached key), no RoPE.

The prefix enters through the HF cache: a ``DynamicCache`` is pre-filled with the P prefix entries,
so every layer's keys are ``[prefix | context | new tokens]``. A 4-D additive attention mask lets
only mask tokens see the prefix; real tokens and draft candidates never do, so their logits are the
base model's own. Positions are passed explicitly, so the prefix occupies no position.

Adapter folder: ``adapter.safetensors`` + ``bita_config.json`` (with ``base_model``, the alias or
path of the base model; loading = base + adapter). A config written before a field existed loads
with that field's default.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.bita.data import PackedMasks, packed_masks
from leanlm.core.errors import UserError
from leanlm.core.sft import IGNORE_INDEX

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "bita_config.json"
MAX_MASKS = 16
TRAINING_FORWARDS = ("two_pass", "joint")


@dataclass
class BiTAConfig:
    """Adapter hyperparameters (paper defaults: M=3, P=16, dropout 0.1) and the base-model pointer.

    ``training_forward``: how ``BiTAModel.forward`` computes the training loss, ``two_pass`` (real
    tokens without autograd, then the mask tokens) or ``joint`` (the packed sequence in one
    forward, the original's way); both give the same loss and gradients.
    """

    num_masks: int = 3
    num_prefix: int = 16
    prefix_dropout: float = 0.1
    base_model: str = "default"
    training_forward: str = "two_pass"
    # shapes of the base model, filled in by BiTAModel and checked on load
    vocab_size: int = 0
    num_layers: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    hidden_size: int = 0

    def validate(self) -> None:
        if not 1 <= self.num_masks <= MAX_MASKS:
            raise UserError(f"num_masks (M) must be between 1 and {MAX_MASKS}, got {self.num_masks}")
        if not 1 <= self.num_prefix <= 1024:
            raise UserError(f"num_prefix (P) must be between 1 and 1024, got {self.num_prefix}")
        if not 0.0 <= self.prefix_dropout < 1.0:
            raise UserError(f"prefix_dropout must be in [0, 1), got {self.prefix_dropout}")
        if self.training_forward not in TRAINING_FORWARDS:
            raise UserError(f"training_forward must be two_pass or joint, got {self.training_forward!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BiTAConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def base_shapes(base: Any) -> dict[str, int]:
    c = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    heads = c.num_attention_heads
    return {
        "vocab_size": int(base.get_output_embeddings().weight.shape[0]),
        "num_layers": int(c.num_hidden_layers),
        "num_kv_heads": int(getattr(c, "num_key_value_heads", None) or heads),
        "head_dim": int(getattr(c, "head_dim", None) or c.hidden_size // heads),
        "hidden_size": int(c.hidden_size),
    }


class BiTAModel(nn.Module):
    """A frozen causal LM plus BiTA's mask embeddings and deep prefix (batch-first tensors)."""

    accepts_loss_kwargs = False  # the loss is a per-batch mean: let HF Trainer scale for accumulation

    def __init__(self, base: Any, config: BiTAConfig | None = None, init: bool = True, seed: int = 0):
        super().__init__()
        config = config or BiTAConfig()
        config.validate()
        shapes = base_shapes(base)
        for key, value in shapes.items():
            setattr(config, key, value)
        self.config = config
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        device = base.get_input_embeddings().weight.device
        M, P = config.num_masks, config.num_prefix
        L, nkv, d, H = config.num_layers, config.num_kv_heads, config.head_dim, config.hidden_size
        # fp32 trainable tensors (cast to the base dtype when used), as the original does
        self.mask_embeddings = nn.Parameter(torch.zeros(M, H, device=device))
        self.prefix = nn.Parameter(torch.zeros(P, L, 2, nkv, d, device=device))
        self.prefix_dropout = nn.Dropout(config.prefix_dropout)
        if init:
            self.init_adapter(seed)

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def num_masks(self) -> int:
        return self.config.num_masks

    @property
    def num_prefix(self) -> int:
        return self.config.num_prefix

    @property
    def dtype(self) -> torch.dtype:
        return self.base.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.base.get_input_embeddings().weight.device

    def mask_ids(self) -> list[int]:
        return [self.vocab_size + k for k in range(self.num_masks)]

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def init_adapter(self, seed: int = 0) -> None:
        """Start from realistic values: masks = mean token embedding + small noise; prefix = the
        base model's own keys/values over P random tokens (so their scale matches real keys)."""
        g = torch.Generator().manual_seed(seed)
        emb = self.base.get_input_embeddings().weight.float()
        noise = torch.randn(self.num_masks, emb.shape[1], generator=g) * emb.std().item() * 0.1
        self.mask_embeddings.copy_(emb.mean(0, keepdim=True) + noise.to(emb.device))
        ids = torch.randint(0, self.vocab_size, (1, self.num_prefix), generator=g).to(self.device)
        cache = full_cache()  # a sliding-window model's own cache would keep only its last W-1 entries
        self.base.get_decoder()(input_ids=ids, past_key_values=cache, use_cache=True)
        for layer in range(self.config.num_layers):
            k, v = cache.layers[layer].keys[0], cache.layers[layer].values[0]  # [nkv, P, d]
            self.prefix[:, layer, 0] = k.transpose(0, 1).float()
            self.prefix[:, layer, 1] = v.transpose(0, 1).float()

    # ------------------------------------------------------------------ pieces of the forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings, with ids ``>= V`` looked up in the mask table. [b, T] -> [b, T, H]."""
        V = self.vocab_size
        is_mask = input_ids >= V
        tokens = self.base.get_input_embeddings()(input_ids.clamp(max=V - 1))
        if not bool(is_mask.any()):
            return tokens
        masks = self.mask_embeddings.to(tokens.dtype)[(input_ids - V).clamp(0, self.num_masks - 1)]
        return torch.where(is_mask.unsqueeze(-1), masks, tokens)

    def prefix_cache(self, batch_size: int = 1) -> Any:
        """A DynamicCache holding only the prefix: per layer K, V of shape [b, n_kv, P, d]."""
        from transformers import DynamicCache

        kv = self.prefix_dropout(self.prefix).to(self.dtype)  # [P, L, 2, nkv, d]
        kv = kv.permute(1, 2, 3, 0, 4).unsqueeze(2)  # [L, 2, 1, nkv, P, d]
        kv = kv.expand(-1, -1, batch_size, -1, -1, -1)
        data = [(kv[layer, 0], kv[layer, 1]) for layer in range(self.config.num_layers)]
        # no config: every layer keeps every entry (sliding windows are applied by the masks instead)
        return DynamicCache(ddp_cache_data=data)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
    ) -> torch.Tensor:
        """Last hidden states [b, T, H]. ``attention_mask`` is additive [b, 1, T, cache_len + T];
        ``cache`` holds the P prefix entries, then real tokens at positions 0, 1, ... in order."""
        cached_real = cache.get_seq_length() - self.num_prefix
        keys = torch.cat(
            [
                torch.full((self.num_prefix,), PREFIX_POSITION, device=position_ids.device),
                torch.arange(cached_real, device=position_ids.device),
            ]
        )
        key_positions = torch.cat([keys.expand(position_ids.shape[0], -1), position_ids], dim=1)
        out = self.base.get_decoder()(
            inputs_embeds=self.embed(input_ids),
            attention_mask=layer_masks(self.base.config, attention_mask, position_ids, key_positions),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The base model's logits for ``hidden`` [..., H], final soft-capping (Gemma-2) included."""
        logits = self.base.get_output_embeddings()(hidden)
        cap = getattr(self.base.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    # ------------------------------------------------------------------ training forward

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        freeze_len: torch.Tensor,
        num_groups: torch.Tensor,
        seq_len: torch.Tensor,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        """Packed training step (see ``data.py``): CE at mask positions, labels NOT shifted.

        input_ids, labels: [b, T]; freeze_len, num_groups, seq_len: [b]. ``config.training_forward``
        ``two_pass`` (default) runs the real tokens once without autograd and only the mask tokens
        with it; ``joint`` runs the packed sequence in one forward. Both give the same loss and
        gradients.
        """
        mode = self.config.training_forward
        if mode not in TRAINING_FORWARDS:  # set on the config after construction: check again
            self.config.validate()
        masks = packed_masks(freeze_len, num_groups, seq_len, self.num_masks, T=input_ids.shape[1])
        if mode == "joint":
            return {"loss": self.joint_loss(input_ids, labels, masks)}
        hidden, mask_labels = self.two_pass_hidden(input_ids, labels, masks, freeze_len, seq_len)
        return {"loss": self._mask_loss(hidden, mask_labels)}

    def joint_loss(self, input_ids: torch.Tensor, labels: torch.Tensor, masks: PackedMasks) -> torch.Tensor:
        """The whole packed sequence [b, T] in one forward with autograd (the original's way)."""
        mask = self._with_prefix(masks.prefix_visible, masks.visible)
        cache = self.prefix_cache(input_ids.shape[0])
        hidden = self.hidden_states(input_ids, mask.unsqueeze(1), masks.positions, cache)
        return self._mask_loss(hidden, labels)

    def two_pass_hidden(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        masks: PackedMasks,
        freeze_len: torch.Tensor,
        seq_len: torch.Tensor,
        real_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of the mask tokens ``[b, N, H]`` and their labels ``[b, N]`` (-100 on
        padding); row r of example i is packed row ``freeze_len[i] + r``, mask ``r % M``. The loss
        on them equals ``joint_loss``, at less cost.

        Real tokens see neither the prefix nor any mask, so their keys and values do not depend on
        the adapter. Pass 1 runs the real tokens ``[b, F_max]`` under ``no_grad`` and keeps their
        per-layer K/V. Pass 2 runs only the mask tokens ``[b, N]`` (N = max G*M) with autograd,
        against a cache ``[prefix | real K/V]``. The joint forward instead back-propagates
        through every real row of every layer (they carry the mask embeddings' graph), about
        half of its cost at the paper's layout. ``real_kv`` (per layer K, V ``[b, n_kv, F_max, d]``,
        from ``real_pass``) skips pass 1, e.g. when several adapters score the same examples.
        """
        b, T = input_ids.shape
        F = freeze_len.long()
        F_max = int(F.max())
        N = int((seq_len.long() - F).max())
        dev = input_ids.device
        cols = torch.arange(F_max, device=dev)
        real = cols.view(1, -1) < F.view(-1, 1)  # [b, F_max]

        if real_kv is None:
            real_kv = self.real_pass(input_ids, freeze_len)
        # pass 2: the mask tokens (rows F_b .. F_b+N-1, clamped; rows past seq_len are padding)
        packed_rows = F.view(-1, 1) + torch.arange(N, device=dev).view(1, -1)  # [b, N]
        valid = packed_rows < seq_len.view(-1, 1)
        rows = packed_rows.clamp(max=T - 1)
        ids2 = input_ids.gather(1, rows)
        labels2 = labels.gather(1, rows).masked_fill(~valid, IGNORE_INDEX)
        pos2 = masks.positions.gather(1, rows)
        vis_rows = masks.visible.gather(1, rows.unsqueeze(-1).expand(-1, -1, T))  # [b, N, T]
        vis_real = vis_rows[:, :, :F_max] & real.unsqueeze(1)
        vis_mask = vis_rows.gather(2, rows.unsqueeze(1).expand(-1, N, -1))  # [b, N, N]
        # clamped rows repeat row T-1: hide them as keys (else that row would see itself twice);
        # padding rows see only themselves
        vis_mask = (vis_mask & valid.unsqueeze(1)) | torch.eye(N, dtype=torch.bool, device=dev)
        mask = self._with_prefix(masks.prefix_visible.gather(1, rows), torch.cat([vis_real, vis_mask], -1))
        cache = self.prefix_cache(b)
        for layer, (k, v) in zip(cache.layers, real_kv, strict=True):
            layer.keys = torch.cat([layer.keys, k], dim=2)
            layer.values = torch.cat([layer.values, v], dim=2)
        return self.hidden_states(ids2, mask.unsqueeze(1), pos2, cache), labels2

    @torch.no_grad()
    def real_pass(
        self, input_ids: torch.Tensor, freeze_len: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Pass 1 of ``two_pass_hidden``: the real tokens ``[b, F_max]`` of right-padded packed
        examples, causal, without the adapter; per layer K, V ``[b, n_kv, F_max, d]``."""
        b = input_ids.shape[0]
        F = freeze_len.long()
        F_max = int(F.max())
        dev = input_ids.device
        cols = torch.arange(F_max, device=dev)
        real = cols.view(1, -1) < F.view(-1, 1)  # [b, F_max]
        # columns past each row's F hidden (right padding)
        real_ids = torch.where(real, input_ids[:, :F_max], torch.zeros_like(input_ids[:, :F_max]))
        causal = cols.view(1, -1, 1) >= cols.view(1, 1, -1)  # [1, F_max, F_max]
        vis1 = (causal & real.unsqueeze(1)) | torch.eye(F_max, dtype=torch.bool, device=dev)
        positions = cols.view(1, -1).expand(b, -1)
        mask = additive_mask(vis1, self.dtype).unsqueeze(1)
        cache = full_cache()
        self.base.get_decoder()(
            input_ids=real_ids,
            attention_mask=layer_masks(self.base.config, mask, positions, positions),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _with_prefix(self, prefix_visible: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """[b, q] prefix visibility + [b, q, k] key visibility -> additive [b, q, P + k]."""
        prefix = prefix_visible.unsqueeze(-1).expand(-1, -1, self.num_prefix)
        return additive_mask(torch.cat([prefix, visible], -1), self.dtype)

    def _mask_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        selected = labels != IGNORE_INDEX
        logits = self.logits(hidden[selected]).float()  # only at mask positions: saves the LM head elsewhere
        return nn.functional.cross_entropy(logits, labels[selected])

    # ------------------------------------------------------------------ adapter I/O

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {
            "mask_embeddings": self.mask_embeddings.detach().float().cpu().contiguous(),
            "prefix": self.prefix.detach().float().cpu().contiguous(),
        }

    def save_adapter(self, folder: str | Path) -> Path:
        """Write ``adapter.safetensors`` + ``bita_config.json`` (atomic replace of each file: a crash
        leaves the old adapter or the new one)."""
        from safetensors.torch import save

        from leanlm.core.records import atomic_path, write_json

        folder = Path(folder)
        with atomic_path(folder / ADAPTER_FILE, "wb") as f:
            f.write(save(self.adapter_state(), metadata={"format": "pt"}))
        write_json(folder / CONFIG_FILE, asdict(self.config))
        return folder

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor], where: str = "adapter") -> None:
        for name in ("mask_embeddings", "prefix"):
            if name not in state:
                raise UserError(f"{where}: missing tensor {name!r}")
            target = getattr(self, name)
            if tuple(state[name].shape) != tuple(target.shape):
                raise UserError(
                    f"{where}: {name} has shape {tuple(state[name].shape)}, this base model needs "
                    f"{tuple(target.shape)}: the adapter was trained for another model"
                )
            target.copy_(state[name].to(target.device, target.dtype))


def read_adapter_config(folder: str | Path) -> BiTAConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{folder}: not a BiTA adapter folder (no {CONFIG_FILE})")
    from leanlm.core.records import read_json

    return BiTAConfig.from_dict(read_json(path))


def load_bita(
    adapter: str | Path,
    base: Any = None,
    *,
    dtype: str | None = None,
    device: str | None = None,
) -> BiTAModel:
    """Base model (``base`` or the adapter's ``base_model`` pointer) + the adapter in ``adapter``."""
    from safetensors.torch import load_file

    config = read_adapter_config(adapter)
    if base is None:
        from leanlm.core.models import load_model

        base = load_model(config.base_model, dtype=dtype, device=device)
    saved = {k: getattr(config, k) for k in ("vocab_size", "num_layers", "num_kv_heads", "head_dim")}
    model = BiTAModel(base, config, init=False)
    actual = {k: getattr(model.config, k) for k in saved}
    if any(saved[k] and saved[k] != actual[k] for k in saved):
        raise UserError(f"{adapter}: adapter built for a model with {saved}, the given base has {actual}")
    weights = Path(adapter) / ADAPTER_FILE
    if not weights.exists():
        raise UserError(f"{adapter}: missing {ADAPTER_FILE}")
    model.load_adapter_state(load_file(str(weights)), where=str(weights))
    return model.eval()


# the prefix entries have no position: as keys they are never outside a sliding window
PREFIX_POSITION = -(2**40)


def full_cache() -> Any:
    """An empty ``DynamicCache`` whose layers keep every entry, whatever the model's sliding window."""
    from transformers import DynamicCache

    return DynamicCache()


def sliding_layout(config: Any) -> str | None:
    """``"all"`` (Mistral, Phi-3: every layer windowed), ``"mixed"`` (``config.layer_types`` lists
    ``sliding_attention`` layers: Qwen2's upper layers, Gemma-2's alternate ones) or None."""
    if not getattr(config, "sliding_window", None):
        return None
    types = getattr(config, "layer_types", None)
    if types is not None:
        return "mixed" if "sliding_attention" in types else None
    return "all" if getattr(config, "use_sliding_window", True) else None


def layer_masks(
    config: Any, mask: torch.Tensor, query_positions: torch.Tensor, key_positions: torch.Tensor
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The additive ``mask`` [b, 1, T, K] as each attention layer of the base model needs it.

    A sliding-window layer also hides key j from query i when ``pos_i - pos_j >= W`` (HF's own
    rule: the last W positions, the query's included); positions are ``query_positions`` [b, T]
    and ``key_positions`` [b, K]. A custom 4D mask bypasses HF's mask building, so without this a
    windowed model would attend over the whole context and BiTA would stop matching greedy.
    Models with both kinds of layers take a ``{layer type: mask}`` dict.
    """
    layout = sliding_layout(config)
    if layout is None:
        return mask
    far = (query_positions.unsqueeze(-1) - key_positions.unsqueeze(1)) >= config.sliding_window  # [b, T, K]
    windowed = mask.masked_fill(far.unsqueeze(1), torch.finfo(mask.dtype).min)
    if layout == "all":
        return windowed
    return {"full_attention": mask, "sliding_attention": windowed}


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean visibility -> additive mask (0 where visible, the dtype's minimum where hidden)."""
    out = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return out.masked_fill_(~visible, torch.finfo(dtype).min)


def describe(model: BiTAModel) -> str:
    n_train = sum(p.numel() for p in (model.mask_embeddings, model.prefix))
    n_base = sum(p.numel() for p in model.base.parameters())
    return f"BiTA adapter: {n_train:,} trainable parameters ({100 * n_train / n_base:.3f}% of {n_base:,}); {json.dumps(asdict(model.config))}"
