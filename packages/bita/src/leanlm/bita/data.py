"""BiTA training examples in the packed ("efficient") layout.

For a prompt ``src`` and a response ``tgt`` (ending in EOS), G windows starting at consecutive
response offsets ``s_0 .. s_{G-1}`` are packed into one sequence::

    input_ids = src + tgt[:s_last] + [mask_0 .. mask_{M-1}] * G         (F = len(src) + s_last)
    labels    = [-100] * F + concat_j tgt[s_j+1 : s_j+1+M]

Group j sees only ``src + tgt[:s_j]`` (the real tokens before column ``F - (G-1-j)``), the prefix,
and its own masks causally; it sees no other group. Real tokens see neither the prefix nor any
mask. Mask k of group j therefore predicts the token k+2 positions after its last visible token
(the token right after it, ``tgt[s_j]``, is the base model's own next-token prediction).
Position ids = number of visible non-prefix keys - 1. The loss is a cross-entropy at the mask
positions WITHOUT the causal shift (labels sit on the mask positions themselves).

Truncation (fixed w.r.t. the original, where a long prompt left no room for targets): the whole
packed sequence fits ``cutoff``; a prompt longer than ``max_prompt_length`` (default cutoff/2) is
cut from the left, and the number of groups / window starts is chosen to fit what remains.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch

from leanlm.core.sft import IGNORE_INDEX


def build_example(
    src: Sequence[int],
    tgt: Sequence[int],
    *,
    num_masks: int,
    vocab_size: int,
    max_groups: int = 64,
    cutoff: int = 2048,
    max_prompt_length: int | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any] | None:
    """One packed example, or None when the response is too short to hold a single window."""
    M = num_masks
    rng = rng or random.Random(0)
    if cutoff < 2 * (M + 2):
        raise ValueError(f"cutoff {cutoff} is too small for {M} masks")
    src = list(src)
    keep = max_prompt_length if max_prompt_length is not None else cutoff // 2
    if len(src) + len(tgt) > cutoff and len(src) > keep:
        src = src[-keep:]
    room = cutoff - len(src)  # budget for tgt[:s_last] + G*M masks
    starts = len(tgt) - M  # valid window starts s: tgt[s+M] must exist
    # G groups need s_last + G*M <= room with s_last >= G-1
    G = min(starts, max_groups, (room + 1) // (M + 1))
    if G <= 0:
        return None
    hi = min(starts - G, room - G * M - (G - 1))
    s0 = rng.randint(0, hi) if hi > 0 else 0
    s_last = s0 + G - 1
    mask_ids = [vocab_size + k for k in range(M)]
    input_ids = src + list(tgt[:s_last]) + mask_ids * G
    labels = [IGNORE_INDEX] * (len(src) + s_last)
    for j in range(G):
        s = s0 + j
        labels += list(tgt[s + 1 : s + 1 + M])
    F = len(src) + s_last
    assert len(labels) == len(input_ids) == F + G * M <= cutoff
    return {
        "input_ids": input_ids,
        "labels": labels,
        "freeze_len": F,
        "num_groups": G,
        "seq_len": len(input_ids),
    }


class PackedMasks(NamedTuple):
    visible: torch.Tensor  # [b, T, T] bool, over non-prefix keys
    prefix_visible: torch.Tensor  # [b, T] bool
    positions: torch.Tensor  # [b, T] position ids


def packed_masks(
    freeze_len: torch.Tensor, num_groups: torch.Tensor, seq_len: torch.Tensor, num_masks: int, T: int
) -> PackedMasks:
    """Visibility and positions for a right-padded batch of packed examples.

    freeze_len F, num_groups G, seq_len S: [b] -> (visible [b, T, T] bool over non-prefix keys,
    prefix_visible [b, T] bool, position_ids [b, T]). Padding rows see only themselves.
    """
    dev = freeze_len.device
    M = num_masks
    F = freeze_len.view(-1, 1, 1).long()
    G = num_groups.view(-1, 1, 1).long()
    S = seq_len.view(-1, 1, 1).long()
    i = torch.arange(T, device=dev).view(1, T, 1)
    j = torch.arange(T, device=dev).view(1, 1, T)
    row_group = torch.div(i - F, M, rounding_mode="floor")
    col_group = torch.div(j - F, M, rounding_mode="floor")
    limit = F - (G - 1 - row_group)  # a mask row sees real columns < limit
    col_real = j < F
    real_rows = col_real & (j <= i)
    mask_rows = (col_real & (j < limit)) | (~col_real & (col_group == row_group) & (j <= i))
    visible = torch.where(i < F, real_rows, mask_rows)
    visible = torch.where(i < S, visible, i == j)
    rows = i.squeeze(-1)  # [1, T]
    F1, S1 = F.squeeze(-1), S.squeeze(-1)
    prefix_visible = (rows >= F1) & (rows < S1)
    k = torch.remainder(rows - F1, M)
    positions = torch.where(rows < F1, rows, limit.squeeze(-1) + k)
    positions = torch.where(rows < S1, positions, torch.zeros_like(positions))
    return PackedMasks(visible, prefix_visible, positions)


def tokenize_pair(tokenizer: Any, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """Prompt ids (with the tokenizer's special tokens) and response ids + EOS."""
    from leanlm.core.sft import encode_prompt

    src = encode_prompt(tokenizer, prompt)  # one BOS, also when a chat template rendered it already
    tgt = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        tgt = tgt + [tokenizer.eos_token_id]
    return src, tgt


def build_dataset(
    pairs: Iterable[tuple[list[int], list[int]]],
    *,
    num_masks: int,
    vocab_size: int,
    max_groups: int = 64,
    cutoff: int = 2048,
    resample: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``resample`` copies of every pair, each with its own random windows (the paper uses 4)."""
    rng = random.Random(seed)
    pairs = list(pairs)
    out = []
    for _ in range(max(1, resample)):
        for src, tgt in pairs:
            ex = build_example(
                src,
                tgt,
                num_masks=num_masks,
                vocab_size=vocab_size,
                max_groups=max_groups,
                cutoff=cutoff,
                rng=rng,
            )
            if ex is not None:
                out.append(ex)
    rng.shuffle(out)
    return out
