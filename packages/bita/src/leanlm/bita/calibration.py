"""Calibrated sparse draft trees (``--tree auto:N``), chosen from measured acceptance.

During decoding, the mask group of the last accepted node drafts the next D tokens: mask m
proposes the token m places after the bonus token. ``collect_calibration`` decodes held-in
prompts (a chain tree over all M masks), records the top-R tokens of every mask at every step, and
afterwards finds the **rank** of the true token (the one greedy decoding emitted there) in each
mask: a rank tuple (r0, r1, ..) per step, cut at the first mask whose top-R missed.

A tree node with rank path (r0, .., rm) is accepted at a step exactly when that step's rank tuple
starts with the path (greedy verification accepts the longest path of the tree that matches). So

    P(node) = (steps whose rank tuple starts with the path + s * prod_m p_m(r_m)) / (steps + s)
    E[accepted per forward] = 1 + sum over the tree's nodes of P(node)

where p_m(r) is mask m's rank-r hit rate on its own (the independent estimate, as Medusa uses) and
s (``smoothing``) a pseudo-count that orders paths never seen. P never grows along a path, so
``choose_tree`` takes nodes best-first from a heap and its N picks are the N largest P: a
prefix-closed tree maximising the expected accepted length for N candidate nodes.

The statistics are saved as ``calibration.json`` beside the adapter.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.bita.trees import TreeSpec
from leanlm.core.errors import UserError

CALIBRATION_FILE = "calibration.json"
MAX_BUDGET = 256


@dataclass
class Calibration:
    """Per-(mask, rank) and per-rank-path acceptance counts (see the module docstring)."""

    num_masks: int
    max_rank: int
    steps: int = 0  # steps whose next token (mask 0's target) is known
    rank_counts: list[list[int]] = field(default_factory=list)  # [M][R+1]; index R = not in top-R
    path_counts: dict[tuple[int, ...], int] = field(default_factory=dict)
    smoothing: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rank_counts:
            self.rank_counts = [[0] * (self.max_rank + 1) for _ in range(self.num_masks)]

    def add_step(self, ranks: Sequence[int | None]) -> None:
        """One step: rank of the true token in each mask's top-R (None: target beyond the output,
        ``max_rank``: a miss). Only the leading run of hits counts towards paths."""
        if not ranks or ranks[0] is None:
            return
        self.steps += 1
        path: list[int] = []
        cut = False
        for m, r in enumerate(ranks[: self.num_masks]):
            if r is None:
                break
            self.rank_counts[m][min(int(r), self.max_rank)] += 1
            if cut or r >= self.max_rank:
                cut = True
                continue
            path.append(int(r))
            key = tuple(path)
            self.path_counts[key] = self.path_counts.get(key, 0) + 1

    def rank_probability(self, mask: int, rank: int) -> float:
        total = sum(self.rank_counts[mask])
        return self.rank_counts[mask][rank] / total if total else 0.0

    def path_probability(self, path: Sequence[int]) -> float:
        if self.steps == 0 and self.smoothing == 0:
            return 0.0
        indep = math.prod(self.rank_probability(m, r) for m, r in enumerate(path))
        return (self.path_counts.get(tuple(path), 0) + self.smoothing * indep) / (self.steps + self.smoothing)

    def expected_accepted(self, tree: TreeSpec) -> float:
        """1 (the bonus token) + the sum of the nodes' acceptance probabilities."""
        return 1.0 + sum(self.path_probability(p) for p in tree.paths)

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_masks": self.num_masks,
            "max_rank": self.max_rank,
            "steps": self.steps,
            "rank_counts": self.rank_counts,
            "path_counts": {"/".join(map(str, k)): v for k, v in sorted(self.path_counts.items())},
            "smoothing": self.smoothing,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        try:
            return cls(
                num_masks=int(data["num_masks"]),
                max_rank=int(data["max_rank"]),
                steps=int(data["steps"]),
                rank_counts=[[int(x) for x in row] for row in data["rank_counts"]],
                path_counts={
                    tuple(int(r) for r in k.split("/")): int(v) for k, v in data["path_counts"].items()
                },
                smoothing=float(data.get("smoothing", 1.0)),
                meta=dict(data.get("meta", {})),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise UserError(f"calibration file is malformed ({e!r})") from None

    def save(self, folder: str | Path) -> Path:
        from leanlm.core.records import write_json

        path = Path(folder) / CALIBRATION_FILE
        write_json(path, self.to_dict())
        return path


def load_calibration(folder: str | Path | None) -> Calibration | None:
    """The calibration saved beside an adapter, or None."""
    if folder is None:
        return None
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return None
    from leanlm.core.records import read_json

    return Calibration.from_dict(read_json(path))


def choose_tree(calibration: Calibration, budget: int, num_masks: int) -> TreeSpec:
    """The ``budget`` rank paths (depth <= min(M, calibrated masks)) with the largest P(node)."""
    budget = int(budget)
    if not 1 <= budget <= MAX_BUDGET:
        raise UserError(f"auto:N needs 1 <= N <= {MAX_BUDGET}, got {budget}")
    if calibration.steps == 0:
        raise UserError("the calibration holds no steps: run bita-eval --calibrate on more prompts")
    depth = min(int(num_masks), calibration.num_masks)
    R = calibration.max_rank
    heap: list[tuple[float, int, tuple[int, ...]]] = []

    def push(path: tuple[int, ...]) -> None:
        heapq.heappush(heap, (-calibration.path_probability(path), len(path), path))

    for r in range(R):
        push((r,))
    chosen: list[tuple[int, ...]] = []
    while heap and len(chosen) < budget:
        _, _, path = heapq.heappop(heap)
        chosen.append(path)
        if len(path) < depth:
            for r in range(R):
                push(path + (r,))
    return TreeSpec.from_paths(chosen, name=f"auto:{budget}")


def ranks_of(
    truth: Sequence[int], produced: int, top: Sequence[Sequence[int]], max_rank: int
) -> list[int | None]:
    """Rank of ``truth[produced + m]`` in ``top[m]`` for each mask m (``max_rank`` if absent,
    None when the output ended before that position)."""
    out: list[int | None] = []
    for m, row in enumerate(top):
        j = produced + m
        if j >= len(truth):
            out.append(None)
            continue
        row = list(row[:max_rank])
        out.append(row.index(truth[j]) if truth[j] in row else max_rank)
    return out


def collect_calibration(
    model: Any,
    prompts: Iterable[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    eos_token_id: Any = None,
    max_rank: int = 10,
    smoothing: float = 1.0,
) -> Calibration:
    """Decode each prompt (token ids) with a chain over all M masks and count, per step, where the
    true next tokens ranked in each mask's prediction."""
    from leanlm.bita.decoding import BiTADecoder

    M = model.num_masks
    if not 1 <= max_rank <= 64:
        raise UserError(f"calibration ranks must be between 1 and 64, got {max_rank}")
    cal = Calibration(num_masks=M, max_rank=max_rank, smoothing=smoothing)
    dec = BiTADecoder(model, "-".join(["1"] * M))
    dec.record_ranks = max_rank
    prompts_seen = tokens = 0
    for ids in prompts:
        dec.record = []
        out = dec.generate(list(ids), max_new_tokens, eos_token_id)
        for produced, top in dec.record:
            cal.add_step(ranks_of(out.tokens, produced, top, cal.max_rank))
        prompts_seen += 1
        tokens += len(out.tokens)
    dec.record = None
    cal.meta = {"prompts": prompts_seen, "new_tokens": tokens, "max_new_tokens": max_new_tokens}
    return cal


def summary(cal: Calibration, budgets: Sequence[int] = (1, 2, 4, 8, 16, 32)) -> dict[str, Any]:
    """Hit rates of each mask at ranks 0-4 and the expected accepted length of auto trees."""
    out: dict[str, Any] = {
        "steps": cal.steps,
        "masks": [
            {
                "mask": m,
                "top1": cal.rank_probability(m, 0),
                "top5": sum(cal.rank_probability(m, r) for r in range(min(5, cal.max_rank))),
            }
            for m in range(cal.num_masks)
        ],
    }
    trees = {}
    for n in budgets:
        tree = choose_tree(cal, n, cal.num_masks)
        trees[tree.label()] = {"expected_accepted": cal.expected_accepted(tree), "widths": list(tree.widths)}
    out["auto_trees"] = trees
    return out
