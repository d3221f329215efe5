"""Asymmetric clipping search (the PTQ initialisation of BitDistiller) and the clip cache.

For each linear layer (q/k projections skipped: their error is amplified by the q·k product) and
each (output row c, input group n) the search picks a clipping range ``[min_n * (1 - j/20),
max_n * (1 - i/20)]`` for i, j in 0..9 (max and min shrink independently: asymmetric) minimizing
the mean squared error of that group's contribution to the layer output on calibration inputs:

    err(c, n) = mean_t ( x_tn · (Q(clamp(w_cn)) - w_cn) )^2 = d_cnᵀ H_n d_cn,   H_n = mean_t x_tn x_tnᵀ

``H_n`` (``[g, g]`` per group) is accumulated once from the calibration activations, so every grid
point costs a small quadratic form instead of a pass over the tokens; the value is exactly the
token-averaged error of the original (which subsampled 512 tokens). Layers are processed one at a
time with full-precision inputs (each layer's output, computed unclipped, feeds the next).

Fused projections: Phi-3's ``qkv_proj`` holds ``[q; k; v]`` rows; only its v rows are searched
(q and k get their own group range, so clamping leaves them unchanged), which is what the search
does with separate q/k/v layers. ``gate_up_proj`` is searched whole: the search is per output row,
so that equals searching gate and up apart.

``clip_model`` is bitdistiller-clip's flow: search (or take a cache), save the cache, optionally
write the clipped model.

Cache file (``torch.save``): ``{"format", "spec", "model", "clip": [(name, max [N, K/g, 1], min [N, K/g, 1])]}``;
``apply_clip`` clamps the latent weights of a model to it, checking names and shapes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.bitdistiller.modules import check_group_size, quantizable_linears
from leanlm.bitdistiller.options import ClipOptions
from leanlm.bitdistiller.quant import QuantSpec, nf3_ste
from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit

log = logging.getLogger(__name__)

CACHE_FORMAT = "leanlm-bitdistiller-clip/1"
SKIP_PATTERNS = ("q_", "k_", "query", "key", "Wqkv")
FUSED_QKV = "qkv_proj"  # Phi-3: rows [q; k; v], split by the config's head counts
CALIB_DATASETS = ("text", "code", "gsm8k")


# ----------------------------------------------------------------------------- calibration data


def calibration_texts(dataset: str, limit: int = 2000, seed: int = 42) -> list[str]:
    """Texts for calibration: text (Shakespeare), code (HumanEval), gsm8k, or a local JSON/JSONL file."""
    from leanlm.core.datasets import load_records

    if dataset not in CALIB_DATASETS and not Path(dataset).exists():
        raise UserError(
            f"calibration dataset {dataset!r}: use one of {', '.join(CALIB_DATASETS)} or a local file"
        )
    records = load_records(dataset, seed=seed, limit=limit)
    texts = []
    for r in records:
        if "text" in r:
            texts.append(r["text"])
        elif "prompt" in r and "canonical_solution" in r:  # HumanEval
            texts.append(f"Instruction:\n{r['prompt']}\nOutput:\n{r['canonical_solution']}")
        elif "question" in r and "solution" in r:  # GSM8K
            texts.append(f"{r['question']}\n{r['solution']}")
        elif "instruction" in r:
            texts.append(
                f"Instruction:\n{r['instruction']}\n{r.get('input') or ''}\nOutput:\n{r.get('output', '')}"
            )
        elif "prompt" in r:
            texts.append(f"{r['prompt']}{r.get('response', '')}")
        else:
            raise UserError(
                f"{dataset}: records need a 'text', 'instruction' or 'prompt' field, got {sorted(r)}"
            )
    return texts


def calibration_blocks(tokenizer: Any, texts: Iterable[str], n_samples: int, seqlen: int) -> torch.Tensor:
    """Concatenate texts of at most 512 tokens and cut ``n_samples`` blocks of ``seqlen`` tokens."""
    ids: list[int] = []
    need = n_samples * seqlen
    for text in texts:
        t = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not t or len(t) > 512:
            continue
        ids.extend(t)
        if len(ids) >= need:
            break
    n = len(ids) // seqlen
    if n == 0:
        raise UserError(f"calibration data has {len(ids)} tokens, fewer than one block of {seqlen}")
    if n < n_samples:
        log.warning("calibration data gives %d blocks of %d tokens (asked for %d)", n, seqlen, n_samples)
    n = min(n, n_samples)
    return torch.tensor(ids[: n * seqlen]).reshape(n, seqlen)


# ----------------------------------------------------------------------------- the search


def _fake_quant(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if spec.quant_type == "nf3":
        return nf3_ste(w, spec.group_size)
    return lowbit.fake_quantize(w, spec.bits, spec.group_size)


@torch.no_grad()
def group_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``d_cnᵀ H_n d_cn`` for ``w, w_hat [N, K]`` and ``h [K/g, g, g]``: ``[N, K/g]``."""
    n_groups, g = h.shape[0], h.shape[1]
    d = (w_hat - w).reshape(w.shape[0], n_groups, g).transpose(0, 1)  # [K/g, N, g]
    return (torch.bmm(d, h) * d).sum(-1).t()  # one batched matmul per group, then the row-wise dot


@torch.no_grad()
def search_clip(
    w: torch.Tensor,
    h: torch.Tensor,
    spec: QuantSpec,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    rows_per_batch: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best (max, min) per group of ``w [N, K]`` given ``h [K/g, g, g]``: two ``[N, K/g, 1]`` tensors."""
    w = w.float()
    h = h.float().to(w.device)
    n_out, k = w.shape
    g = spec.group_size
    steps = int(max_shrink * n_grid)
    best_max, best_min = [], []
    for r0 in range(0, n_out, rows_per_batch):
        wb = w[r0 : r0 + rows_per_batch]
        grouped = wb.reshape(wb.shape[0], k // g, g)
        org_max, org_min = grouped.amax(-1, keepdim=True), grouped.amin(-1, keepdim=True)
        best_err = torch.full(grouped.shape[:2], float("inf"), device=w.device)
        b_max, b_min = org_max.clone(), org_min.clone()
        for i in range(steps):
            max_c = org_max * (1 - i / n_grid)
            for j in range(steps):
                min_c = org_min * (1 - j / n_grid)
                clipped = torch.minimum(torch.maximum(grouped, min_c), max_c).reshape(wb.shape)
                err = group_error(wb, _fake_quant(clipped, spec), h)
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                b_max = torch.where(better.unsqueeze(-1), max_c, b_max)
                b_min = torch.where(better.unsqueeze(-1), min_c, b_min)
        best_max.append(b_max)
        best_min.append(b_min)
    return torch.cat(best_max), torch.cat(best_min)


class _HessianHook:
    """Forward hook accumulating ``H_n = mean_t x_tn x_tnᵀ`` per input group of a linear layer."""

    def __init__(self, group_size: int):
        self.g = group_size
        self.h: torch.Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, args: tuple, output: Any) -> None:  # noqa: ARG002
        x = args[0].detach().float().reshape(-1, args[0].shape[-1])
        xg = x.reshape(x.shape[0], -1, self.g)
        part = torch.einsum("tnk,tnl->nkl", xg, xg)
        self.h = part if self.h is None else self.h + part
        self.count += x.shape[0]

    def value(self) -> torch.Tensor:
        return self.h / max(self.count, 1)


def fused_qkv_split(model: nn.Module, module: nn.Linear) -> int | None:
    """Number of q + k rows at the top of a fused ``qkv_proj`` weight [q; k; v], or None when the
    config's head counts do not explain its shape (then the layer is skipped, like q/k)."""
    cfg = getattr(model, "config", None)
    heads = getattr(cfg, "num_attention_heads", None)
    if not heads:
        return None
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    q_rows, kv_rows = heads * head_dim, kv_heads * head_dim
    return q_rows + kv_rows if q_rows + 2 * kv_rows == module.out_features else None


def _search_rows_from(
    w: torch.Tensor, first: int, h: torch.Tensor, spec: QuantSpec, n_grid: int, max_shrink: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search rows ``first:`` of ``w [N, K]``; rows above keep their own group max/min (no clipping)."""
    top = w[:first].float().reshape(first, -1, spec.group_size)
    mx, mn = search_clip(w[first:], h, spec, n_grid, max_shrink)
    return torch.cat([top.amax(-1, keepdim=True), mx]), torch.cat([top.amin(-1, keepdim=True), mn])


class _Stop(Exception):
    pass


def _decoder_layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise UserError(
            f"clipping search supports LLaMA-style models (model.model.layers); got {type(model).__name__}"
        )
    return layers


# what one decoder layer receives per calibration batch: hidden states and its keyword arguments
LayerInputs = list[tuple[torch.Tensor, dict[str, Any]]]


@torch.no_grad()
def _capture_layer_inputs(
    model: nn.Module, layers: nn.ModuleList, blocks: torch.Tensor, batch_size: int
) -> tuple[list[torch.Tensor], list[list[dict[str, Any]]]]:
    """(hidden states decoder layer 0 receives per batch, every layer's keyword arguments per batch).

    The keyword arguments (rotary embeddings, masks, ...) differ per layer where sliding-window and
    full-attention layers alternate (Gemma2, Qwen2 with max_window_layers), so each layer is later
    replayed with its own. The forward pass stops at the last layer: everything is known by then.
    """
    hidden_states: list[torch.Tensor] = []
    layer_kwargs: list[list[dict[str, Any]]] = [[] for _ in layers]

    def catcher(li: int) -> Any:
        def catch(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            kwargs = dict(kwargs)
            hidden = args[0] if args else kwargs.pop("hidden_states")
            layer_kwargs[li].append(kwargs)
            if li == 0:
                hidden_states.append(hidden)
            if li == len(layers) - 1:
                raise _Stop  # every layer's arguments are known: the last layer need not run

        return catch

    handles = [
        layer.register_forward_pre_hook(catcher(li), with_kwargs=True) for li, layer in enumerate(layers)
    ]
    try:
        for b0 in range(0, blocks.shape[0], batch_size):
            with contextlib.suppress(_Stop):
                model(input_ids=blocks[b0 : b0 + batch_size], use_cache=False)
    finally:
        for hd in handles:
            hd.remove()
    return hidden_states, layer_kwargs


def _search_targets(layer: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The layer's quantizable linears except q/k projections (their error is amplified by q·k)."""
    return [
        (name, m)
        for name, m in quantizable_linears(layer)
        if not any(p in name.rsplit(".", 1)[-1] for p in SKIP_PATTERNS)
    ]


def _run_layer(
    layer: nn.Module, targets: list[tuple[str, nn.Linear]], inputs: LayerInputs, group_size: int
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Run ``layer`` on every batch: (``H_n [K/g, g, g]`` per target linear, the layer's outputs)."""
    hooks = {name: _HessianHook(group_size) for name, _ in targets}
    handles = [m.register_forward_hook(hooks[name]) for name, m in targets]
    outputs = []
    try:
        for hidden, kwargs in inputs:
            out = layer(hidden, **kwargs)
            outputs.append(out[0] if isinstance(out, tuple) else out)
    finally:
        for hd in handles:
            hd.remove()
    return {name: hook.value() for name, hook in hooks.items()}, outputs


def _search_linear(
    model: nn.Module,
    name: str,
    m: nn.Linear,
    h: torch.Tensor,
    spec: QuantSpec,
    n_grid: int,
    max_shrink: float,
    warn: bool,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(max, min) ``[N, K/g, 1]`` for one linear; a fused ``qkv_proj`` gets its v rows searched only
    (None when the config's head counts do not split it). ``warn``: say so (once, on layer 0)."""
    if name.rsplit(".", 1)[-1] != FUSED_QKV:
        return search_clip(m.weight.data, h, spec, n_grid, max_shrink)
    first = fused_qkv_split(model, m)
    if first is None:
        if warn:
            log.warning("clip search: %s does not split into q/k/v by the config; skipped", name)
        return None
    if warn:
        log.warning("clip search: %s fuses q/k/v: only its v rows are clipped (q/k are skipped)", name)
    return _search_rows_from(m.weight.data, first, h, spec, n_grid, max_shrink)


@torch.no_grad()
def run_clip_search(
    model: nn.Module,
    blocks: torch.Tensor,
    spec: QuantSpec,
    batch_size: int = 8,
    n_grid: int = 20,
    max_shrink: float = 0.5,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Layer-by-layer search on calibration ``blocks [n, seqlen]``; returns the clip list (weights untouched).

    Each layer runs on the full-precision outputs of the one before (computed unclipped).
    """
    check_group_size(model, spec.group_size)
    layers = _decoder_layers(model)
    device = next(model.parameters()).device
    hidden_states, layer_kwargs = _capture_layer_inputs(model, layers, blocks.to(device), batch_size)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    clips: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    t0 = time.time()
    for li, layer in enumerate(layers):
        targets = _search_targets(layer)
        inputs = list(zip(hidden_states, layer_kwargs[li], strict=True))
        hessians, hidden_states = _run_layer(layer, targets, inputs, spec.group_size)
        for name, m in targets:
            found = _search_linear(model, name, m, hessians[name], spec, n_grid, max_shrink, warn=li == 0)
            if found is not None:
                clips.append((f"{prefix}.{li}.{name}", found[0].cpu(), found[1].cpu()))
        took = time.time() - t0
        log.info(
            "clip search: layer %d/%d done (%d linears, %.0f s)", li + 1, len(layers), len(targets), took
        )
    return clips


# ----------------------------------------------------------------------------- cache


def model_signature(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    return {
        "model_type": getattr(cfg, "model_type", type(model).__name__),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "name_or_path": getattr(cfg, "_name_or_path", ""),
    }


def save_clip(path: str | Path, clips: list, spec: QuantSpec, model: nn.Module) -> Path:
    from leanlm.core.records import atomic_path

    payload = {"format": CACHE_FORMAT, "spec": spec.to_dict(), "model": model_signature(model), "clip": clips}
    with atomic_path(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load_clip(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such clip cache")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle errors come in many types
        raise UserError(f"{p}: not a clip cache ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("clip"), list):
        raise UserError(f"{p}: not a clip cache (expected a dict with a 'clip' list)")
    return data


@torch.no_grad()
def apply_clip(model: nn.Module, cache: dict[str, Any] | str | Path, spec: QuantSpec | None = None) -> int:
    """Clamp each cached layer's latent weight to its per-group [min, max]; returns the number of layers.

    Every name must exist and every shape fit (checked before anything changes), else one UserError.
    """
    source = str(cache) if not isinstance(cache, dict) else "clip cache"
    data = load_clip(cache) if not isinstance(cache, dict) else cache
    if (
        spec is not None
        and "spec" in data
        and int(data["spec"].get("group_size", spec.group_size)) != spec.group_size
    ):
        raise UserError(
            f"{source} was made for group size {data['spec']['group_size']}, not {spec.group_size}"
        )
    modules = dict(model.named_modules())
    plan = []
    for entry in data["clip"]:
        name, max_val, min_val = entry
        m = modules.get(name)
        if not isinstance(m, nn.Linear):
            raise UserError(
                f"{source} is for another model: it names layer {name!r}, which this model does not have"
            )
        n_out, k = m.weight.shape
        if (
            max_val.ndim != 3
            or max_val.shape[0] != n_out
            or k % max_val.shape[1]
            or max_val.shape != min_val.shape
        ):
            raise UserError(
                f"{source} is for another model: layer {name} has weight {n_out}x{k}, "
                f"the cache has clip ranges {tuple(max_val.shape)}"
            )
        plan.append((m, max_val, min_val))
    for m, max_val, min_val in plan:
        w = m.weight.data
        grouped = w.reshape(w.shape[0], max_val.shape[1], -1)
        clamped = torch.minimum(torch.maximum(grouped, min_val.to(w)), max_val.to(w))
        m.weight.data.copy_(clamped.reshape(w.shape))
    return len(plan)


# ----------------------------------------------------------------------------- the command's flow


def clip_model(config: ClipOptions, spec: QuantSpec) -> dict[str, Any]:
    """Search (unless ``config.apply`` names a cache) and save the cache to ``config.dump_clip``; with
    ``config.save_model`` also write the clipped model (latent weights + quantization_config). A summary."""
    from leanlm.bitdistiller.checkpoint import attach_quantization_config
    from leanlm.core.models import load_model, load_tokenizer

    m = load_model(config.model, dtype=config.dtype, device=config.device)
    tok = load_tokenizer(config.model)
    check_group_size(m, spec.group_size)
    summary: dict[str, Any] = {"spec": spec.name}
    apply = config.apply
    if apply is None:
        texts = calibration_texts(config.calib_dataset)
        blocks = calibration_blocks(tok, texts, config.n_samples, config.seqlen)
        grid = {"n_grid": config.n_grid, "max_shrink": config.max_shrink}
        clips = run_clip_search(m, blocks, spec, batch_size=config.batch_size, **grid)
        save_clip(config.dump_clip, clips, spec, m)
        summary |= {
            "clip_cache": config.dump_clip,
            "layers": len(clips),
            "calib_blocks": int(blocks.shape[0]),
        }
        apply = config.dump_clip
    if config.save_model:
        summary["layers_clipped"] = apply_clip(m, apply, spec)
        attach_quantization_config(m, spec)
        m.save_pretrained(config.save_model)
        tok.save_pretrained(config.save_model)
        summary["saved_model"] = config.save_model
    return summary
