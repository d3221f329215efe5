"""Publishing tuned weights as a difference from the base model, and recovering them.

    make:    diff[k]  = tuned[k] - raw[k]      (saved in fp16 by default: half the size of fp32)
    recover: tuned[k] = raw[k] + diff[k]

Both are computed in fp32 and cast once at the end, so recover(make(x)) equals x up to one fp16
rounding of the difference (exactly, with ``dtype="float32"``).

Pad-token resize: a tuned model whose tokenizer gained a ``[PAD]`` token has one more embedding row
than its base. Before subtracting or adding, the base gets the same token, its new rows initialized
to the mean of the existing rows (input and output embeddings), so make and recover see identical
base weights and the shapes match.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError

log = logging.getLogger(__name__)

PAD_TOKEN = "[PAD]"
DTYPES = ("float16", "bfloat16", "float32")


def _load(path: str | Path) -> tuple[Any, Any]:
    from leanlm.core.models import load_model, load_tokenizer

    model = load_model(str(path), dtype="float32", device="cpu")
    tokenizer = load_tokenizer_raw(str(path)) if Path(str(path)).exists() else load_tokenizer(str(path))
    return model, tokenizer


def load_tokenizer_raw(path: str) -> Any:
    """The tokenizer as saved (no pad token filled in), so a missing ``[PAD]`` can be detected."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise UserError(f"{path}: no tokenizer there ({e})") from None


def add_pad_token(model: Any, tokenizer: Any, target_vocab: int) -> None:
    """Grow ``model``/``tokenizer`` to ``target_vocab`` rows by adding ``[PAD]``, new rows = mean of old rows."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if target_vocab == old:
        return
    if target_vocab < old:
        raise UserError(
            f"the diff/tuned model has fewer embedding rows ({target_vocab}) than the base ({old})"
        )
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    model.resize_token_embeddings(target_vocab, mean_resizing=False)
    with torch.no_grad():
        inp = model.get_input_embeddings().weight
        inp[old:] = inp[:old].mean(dim=0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != inp.data_ptr():
            out.weight[old:] = out.weight[:old].mean(dim=0, keepdim=True)
    log.info("base resized from %d to %d embedding rows (pad token)", old, target_vocab)


def _torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return getattr(torch, name)


def _combine(raw: Any, other: Any, sign: float) -> None:
    """other[k] = other[k] + sign * raw[k] for every tensor of the state dict (in place, fp32)."""
    import torch

    raw_sd = raw.state_dict()
    seen: set[int] = set()  # tied weights (embeddings = lm_head) appear twice: update them once
    with torch.no_grad():
        for name, tensor in other.state_dict().items():
            if tensor.data_ptr() in seen:
                continue
            seen.add(tensor.data_ptr())
            if name not in raw_sd:
                raise UserError(f"weight {name!r} is missing from the base model: not the same architecture")
            if raw_sd[name].shape != tensor.shape:
                raise UserError(
                    f"weight {name!r}: shape {tuple(tensor.shape)} vs base {tuple(raw_sd[name].shape)}"
                )
            if tensor.is_floating_point():
                tensor.add_(raw_sd[name].to(tensor.dtype), alpha=sign)


def make_diff(path_raw: str, path_tuned: str, path_diff: str, dtype: str = "float16") -> Path:
    """Write ``tuned - raw`` (model + tokenizer) to ``path_diff``."""
    torch_dtype = _torch_dtype(dtype)
    tuned, tuned_tok = _load(path_tuned)
    raw, raw_tok = _load(path_raw)
    add_pad_token(raw, raw_tok, tuned.get_input_embeddings().weight.shape[0])
    _combine(raw, tuned, -1.0)
    tuned.to(torch_dtype).save_pretrained(path_diff)
    tuned_tok.save_pretrained(path_diff)
    return Path(path_diff)


def recover(path_raw: str, path_diff: str, path_tuned: str | None = None, dtype: str = "float16") -> Any:
    """``raw + diff``; saved (with the diff's tokenizer) to ``path_tuned`` when given. Returns the model."""
    torch_dtype = _torch_dtype(dtype)
    diff, diff_tok = _load(path_diff)
    raw, raw_tok = _load(path_raw)
    add_pad_token(raw, raw_tok, diff.get_input_embeddings().weight.shape[0])
    _combine(raw, diff, +1.0)
    diff = diff.to(torch_dtype)
    if path_tuned:
        diff.save_pretrained(path_tuned)
        diff_tok.save_pretrained(path_tuned)
    return diff
