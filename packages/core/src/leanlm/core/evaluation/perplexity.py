"""Perplexity the GPTQ way, and a fixed held-out split of a text dataset.

The texts are joined with ``"\\n\\n"`` and tokenized once into one stream of ``N`` ids. The stream
is cut into ``n = N // seqlen`` non-overlapping chunks ``[1, seqlen]`` (the tail is dropped); each
chunk is scored on its own, predicting tokens ``1..seqlen-1`` from their prefixes. With
``nll_c`` the summed negative log-likelihood of chunk ``c``:

    nll = sum_c nll_c / (n * (seqlen - 1))        ppl = exp(nll)

Every chunk has the same length, so this equals GPTQ's ``exp(mean_c mean_t nll)``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from leanlm.core.errors import UserError

SPLITS = ("test", "calib")


def heldout_texts(
    name: str = "text", split: str = "test", fraction: float = 0.1, limit: int | None = None
) -> list[str]:
    """Texts of one side of a fixed, disjoint split of a text dataset.

    A record goes to ``"test"`` when ``sha1(id) mod 10_000 < fraction * 10_000``, otherwise to
    ``"calib"``. The split depends only on the record ids (no RNG, no Python ``hash``), so a
    benchmark can calibrate on ``"calib"`` and evaluate on ``"test"`` in any process, any run.
    Records keep their dataset order; ``limit`` keeps the first ``limit`` texts.
    """
    from leanlm.core.datasets import load_records

    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < fraction < 1.0:
        raise UserError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
    cut = int(round(fraction * 10_000))
    out = []
    for i, r in enumerate(load_records(name)):
        if "text" not in r:
            raise UserError(f"{name}: record {i} has no 'text' field (perplexity needs text records)")
        key = str(r.get("id", i)).encode("utf-8")
        in_test = int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % 10_000 < cut
        if in_test == (split == "test"):
            out.append(r["text"])
    return out[:limit] if limit else out


def _texts(texts_or_dataset: str | Sequence[str]) -> list[str]:
    if isinstance(texts_or_dataset, str):
        from leanlm.core.datasets import load_records

        rows = load_records(texts_or_dataset)
        if any("text" not in r for r in rows):
            raise UserError(f"{texts_or_dataset}: perplexity needs records with a 'text' field")
        return [r["text"] for r in rows]
    texts = list(texts_or_dataset)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UserError("perplexity needs a non-empty list of strings or a dataset name")
    return texts


def token_stream(tokenizer: Any, texts: Sequence[str], need: int | None = None) -> list[int]:
    """Ids of ``"\\n\\n".join(texts)``; with ``need``, only a prefix of at least ``need`` ids.

    Tokenizing a few megabytes costs seconds, so with ``need`` the texts are joined in growing
    prefixes (doubling) until the ids cover ``need`` plus one whole text of margin. The margin
    keeps the first ``need`` ids equal to those of the full join: BPE merges never cross the
    ``"\\n\\n"`` separators far behind the cut.
    """
    if need is None:
        return tokenizer("\n\n".join(texts), add_special_tokens=True)["input_ids"]
    k = 8
    while True:
        k = min(k, len(texts))
        ids = tokenizer("\n\n".join(texts[:k]), add_special_tokens=True)["input_ids"]
        if k == len(texts):
            return ids
        # one extra text of margin past ``need``
        tail = tokenizer("\n\n" + texts[k - 1], add_special_tokens=False)["input_ids"]
        if len(ids) - len(tail) >= need:
            return ids
        k *= 2


def perplexity(
    model: Any,
    tokenizer: Any,
    texts_or_dataset: str | Sequence[str] = "text",
    seqlen: int = 2048,
    max_chunks: int | None = None,
    batch_size: int = 1,
    inference_mode: bool = True,
) -> dict[str, Any]:
    """GPTQ-style perplexity of ``model`` on a text dataset name or a list of texts.

    Returns ``{"ppl", "nll" (mean per predicted token, nats), "seqlen", "n_chunks",
    "n_tokens" (ids fed to the model: n_chunks * seqlen)}``. ``max_chunks`` keeps the first
    chunks only. Deterministic: no sampling, chunks in stream order.

    The forward passes run under ``torch.inference_mode()``; ``inference_mode=False`` uses
    ``torch.no_grad()`` instead (same numbers) for models whose forward touches tensor version
    counters, which inference tensors do not have (e.g. optimum-quanto's frozen weights:
    "Cannot set version_counter for inference tensor").
    """
    import torch
    import torch.nn.functional as F

    if seqlen < 2:
        raise UserError(f"seqlen must be at least 2, got {seqlen}")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    texts = _texts(texts_or_dataset)
    need = max_chunks * seqlen if max_chunks else None
    ids = torch.tensor(token_stream(tokenizer, texts, need), dtype=torch.long)
    n_chunks = ids.numel() // seqlen
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks == 0:
        raise UserError(f"the text has {ids.numel()} tokens, fewer than one chunk of seqlen={seqlen}")
    chunks = ids[: n_chunks * seqlen].view(n_chunks, seqlen)

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode() if inference_mode else torch.no_grad():
            for start in range(0, n_chunks, batch_size):
                batch = chunks[start : start + batch_size].to(device)  # [B, seqlen]
                # an explicit all-ones mask: same result for HF models, and wrappers that record
                # per-token decisions (D-LLM) get a mask to weigh them with
                mask = torch.ones_like(batch)
                logits = model(input_ids=batch, attention_mask=mask, use_cache=False).logits  # [B, seqlen, V]
                # float32 log-softmax: bf16 logits lose ~2 digits of the NLL otherwise
                total += F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum"
                ).item()
    finally:
        model.train(was_training)
    nll = total / (n_chunks * (seqlen - 1))
    return {
        "ppl": math.exp(nll),
        "nll": nll,
        "seqlen": seqlen,
        "n_chunks": n_chunks,
        "n_tokens": n_chunks * seqlen,
    }
