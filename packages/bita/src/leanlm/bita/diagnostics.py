"""How good are the drafts? Teacher-forced top-k accuracy of each mask on (prompt, answer) pairs.

Mask k of a group whose last visible token is ``t`` predicts token ``t + k + 2`` (``data.py``).
On the base model's own greedy answers, top-1 accuracy of mask 0 bounds how often a chain tree's
first candidate is accepted, and top-K accuracy how often a tree of width K at that level holds the
right token. Mean accepted tokens of a chain of depth D is roughly
``1 + a_0 + a_0 a_1' + ...`` with ``a_k'`` the conditional accuracies, so these figures say
whether a slow decoder is limited by the adapter or by the per-step cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from leanlm.bita.data import build_dataset, packed_masks
from leanlm.bita.model import BiTAModel
from leanlm.core.sft import PaddingCollator


@torch.no_grad()
def mask_accuracy(
    model: BiTAModel,
    pairs: Iterable[tuple[list[int], list[int]]],
    *,
    top_k: int = 5,
    max_groups: int = 64,
    cutoff: int = 2048,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Per mask k: ``top1`` and ``top{top_k}`` accuracy and the number of labels ``n``.

    pairs: (prompt ids, answer ids) with the answer as the base model would continue (e.g. its
    greedy output, EOS included). One packed window of up to ``max_groups`` consecutive groups per
    pair is scored, as in training (so all of an answer of up to ``max_groups + M`` tokens).
    """
    M = model.num_masks
    examples = build_dataset(
        pairs,
        num_masks=M,
        vocab_size=model.vocab_size,
        max_groups=max_groups,
        cutoff=cutoff,
        resample=1,
        seed=seed,
    )
    hits1 = torch.zeros(M, dtype=torch.long)
    hitsk = torch.zeros(M, dtype=torch.long)
    counts = torch.zeros(M, dtype=torch.long)
    collate = PaddingCollator(0, pad_to_multiple_of=4)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(model.device) for k, v in collate(examples[start : start + batch_size]).items()}
            ids = batch["input_ids"]
            masks = packed_masks(
                batch["freeze_len"], batch["num_groups"], batch["seq_len"], M, T=ids.shape[1]
            )
            hidden, labels = model.two_pass_hidden(
                ids, batch["labels"], masks, batch["freeze_len"], batch["seq_len"]
            )
            which = torch.arange(labels.shape[1], device=labels.device).remainder(M).expand_as(labels)
            keep = labels != -100
            top = model.logits(hidden[keep]).topk(top_k, dim=-1).indices.cpu()  # [n, top_k]
            target, k = labels[keep].cpu(), which[keep].cpu()
            hits1 += torch.bincount(k[top[:, 0] == target], minlength=M)
            hitsk += torch.bincount(k[(top == target[:, None]).any(-1)], minlength=M)
            counts += torch.bincount(k, minlength=M)
    finally:
        model.train(was_training)
    return {
        "masks": [
            {
                "mask": m,
                "n": int(counts[m]),
                "top1": float(hits1[m]) / max(1, int(counts[m])),
                f"top{top_k}": float(hitsk[m]) / max(1, int(counts[m])),
            }
            for m in range(M)
        ],
        "pairs_scored": len(examples),
    }
