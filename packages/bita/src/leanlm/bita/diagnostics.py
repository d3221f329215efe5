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
from leanlm.core.sft import IGNORE_INDEX, PaddingCollator


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
            keep = labels != IGNORE_INDEX
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


# ----------------------------------------------------------------------------- teacher-forced MAT


@torch.no_grad()
def teacher_forced_kv(model: BiTAModel, prompt: list[int], answer: list[int]) -> list[Any]:
    """The real tokens' per-layer K/V of ``teacher_forced_top``'s packed example (``prompt +
    answer[:-1]``). They do not depend on the adapter: compute once, score many adapters."""
    ids = torch.tensor([list(prompt) + list(answer[:-1])], device=model.device)
    return model.real_pass(ids, torch.tensor([ids.shape[1]], device=model.device))


@torch.no_grad()
def teacher_forced_top(
    model: BiTAModel, prompt: list[int], answer: list[int], k: int = 10, real_kv: list[Any] | None = None
) -> torch.Tensor:
    """Top-``k`` token ids of every mask at every decoding position, in one packed forward:
    ``[n, M, k]`` (CPU) for an answer of n tokens.

    Row s (0 <= s < n) is the mask group that sees ``prompt + answer[:s]``, i.e. the group of the
    node ``answer[s-1]`` (of the prompt's last token for s = 0); its mask m drafts ``answer[s+1+m]``.
    Decoding ``prompt`` when ``answer`` is greedy's own output meets exactly these groups (the
    decoder's drafts after s tokens), so this replaces the n / MAT sequential forwards of decoding.
    """
    M, n = model.num_masks, len(answer)
    if n == 0:
        return torch.zeros(0, M, int(k), dtype=torch.long)
    src = list(prompt)
    F = len(src) + n - 1
    ids = torch.tensor([src + list(answer[: n - 1]) + model.mask_ids() * n], device=model.device)
    labels = torch.zeros_like(ids)  # every mask row kept: two_pass_hidden drops only padding rows
    dev = model.device
    F_t, G_t, S_t = (torch.tensor([v], device=dev) for v in (F, n, ids.shape[1]))
    masks = packed_masks(F_t, G_t, S_t, M, T=ids.shape[1])
    was_training = model.training
    model.eval()
    try:
        hidden, _ = model.two_pass_hidden(ids, labels, masks, F_t, S_t, real_kv=real_kv)
        top = model.logits(hidden[0]).topk(int(k), dim=-1).indices.cpu()  # [n*M, k]
    finally:
        model.train(was_training)
    return top.view(n, M, int(k))


def teacher_forced_ranks(
    model: BiTAModel,
    prompt: list[int],
    answer: list[int],
    *,
    max_rank: int = 10,
    real_kv: list[Any] | None = None,
) -> list[list[int | None]]:
    """Per decoding position s, the rank of ``answer[s+1+m]`` in mask m's top-``max_rank``
    (``max_rank`` = not among them, None = past the answer): what ``collect_calibration`` records."""
    top = teacher_forced_top(model, prompt, answer, max_rank, real_kv=real_kv).tolist()
    n, out = len(answer), []
    for s, row in enumerate(top):
        ranks: list[int | None] = []
        for m, ids in enumerate(row):
            j = s + 1 + m
            ranks.append(None if j >= n else (ids.index(answer[j]) if answer[j] in ids else int(max_rank)))
        out.append(ranks)
    return out


def simulate_tree(ranks: list[list[int | None]], tree: Any) -> list[int]:
    """Tokens kept per forward when decoding the answer behind ``ranks`` with ``tree`` (a
    ``TreeSpec``): the prefill forward keeps 1, then each step keeps 1 + the deepest tree path the
    step's rank tuple starts with, cut at the answer's end (the decoder's ``DecodeOutput.accepted``).
    Exact, since greedy verification accepts a node iff every token on its path is the true one."""
    paths = set(tree.paths)
    n = len(ranks)
    if n == 0:
        return []
    kept, t = [1], 1
    while t < n:
        row, accepted = ranks[t - 1], 0
        for depth in range(1, tree.depth + 1):
            r = row[depth - 1] if depth - 1 < len(row) else None
            if r is None or tuple(row[:depth]) not in paths:
                break
            accepted = depth
        step = min(accepted + 1, n - t)
        kept.append(step)
        t += step
    return kept


def teacher_forced_calibration(
    model: BiTAModel,
    pairs: Iterable[tuple[list[int], list[int]]],
    *,
    max_rank: int = 10,
    held_kv: list[Any] | None = None,
) -> Any:
    """The ``Calibration`` that ``collect_calibration`` would record decoding these (prompt, greedy
    answer) pairs with a chain over all M masks, from ``teacher_forced_ranks`` (one forward each).
    ``held_kv``: the pairs' ``teacher_forced_kv``, if already computed."""
    from leanlm.bita.calibration import Calibration
    from leanlm.bita.trees import TreeSpec

    M = model.num_masks
    cal = Calibration(num_masks=M, max_rank=int(max_rank))
    chain = TreeSpec.from_widths([1] * M)
    prompts = tokens = 0
    pairs = list(pairs)
    for i, (src, tgt) in enumerate(pairs):
        kv = held_kv[i] if held_kv is not None else None
        ranks = teacher_forced_ranks(model, src, tgt, max_rank=max_rank, real_kv=kv)
        t = 0
        for kept in simulate_tree(ranks, chain):
            t += kept
            if t < len(tgt):  # the decoder records after every step; past the answer nothing counts
                cal.add_step(ranks[t - 1])
        prompts, tokens = prompts + 1, tokens + len(tgt)
    cal.meta = {"prompts": prompts, "new_tokens": tokens, "source": "teacher-forced"}
    return cal


def rank_summary(
    all_ranks: Iterable[list[list[int | None]]], trees: Iterable[Any], max_rank: int = 10
) -> dict[str, Any]:
    """MAT of each tree (answer tokens / forwards over all answers, prefill included, see
    ``simulate_tree``) and every mask's top-1 / top-5 hit rate over all positions, from the
    ``teacher_forced_ranks`` of several answers."""
    trees = list(trees)
    for tree in trees:
        if max(max(p) for p in tree.paths) >= int(max_rank):
            raise ValueError(f"tree {tree.label()} uses ranks beyond max_rank={max_rank}")
    tokens, forwards = 0, [0] * len(trees)
    hits1: dict[int, int] = {}
    hits5: dict[int, int] = {}
    counts: dict[int, int] = {}
    for ranks in all_ranks:
        tokens += len(ranks)
        for i, tree in enumerate(trees):
            forwards[i] += len(simulate_tree(ranks, tree))
        for row in ranks:
            for k, r in enumerate(row):
                if r is not None:
                    counts[k] = counts.get(k, 0) + 1
                    hits1[k] = hits1.get(k, 0) + int(r == 0)
                    hits5[k] = hits5.get(k, 0) + int(r < 5)
    return {
        "tokens": tokens,
        "mat": {tree.label(): tokens / max(1, forwards[i]) for i, tree in enumerate(trees)},
        "masks": [
            {"mask": k, "n": counts[k], "top1": hits1[k] / counts[k], "top5": hits5[k] / counts[k]}
            for k in sorted(counts)
        ],
    }


def draft_report(
    model: BiTAModel,
    pairs: Iterable[tuple[list[int], list[int]]],
    trees: Iterable[Any],
    *,
    max_rank: int = 10,
) -> dict[str, Any]:
    """``rank_summary`` of (prompt, greedy answer) pairs, teacher-forced: the MAT decoding would
    measure on them (exact in fp32 up to near-ties) at one forward per answer."""
    ranks = [teacher_forced_ranks(model, src, tgt, max_rank=max_rank) for src, tgt in pairs]
    return rank_summary(ranks, trees, max_rank)
