"""Draft trees: their syntax, the per-step layout, and verification as pure functions.

A tree is a prefix-closed set of **rank paths**: node ``(r0, .., rm)`` sits at level m and holds
rank ``rm`` (0 = top-1) of mask m's prediction; its parent is ``(r0, .., r{m-1})`` (the root for
m = 0). The upper-triangle tree of the paper (``3-2-1``) is ``(0), (1), (2), (0,0), (0,1), (0,0,0)``:
level m holds the top-``widths[m]`` tokens of mask m and only the top-1 node carries children.
A calibrated tree (``auto:N``, see ``calibration.py``) may branch anywhere.

Tree syntax (``TreeSpec.parse``; ``--tree`` of ``bita-eval`` / ``bita-generate``):

* ``1``, ``1-1``, ``3-2-1``: candidates per level, one field per level (``1`` = one level, one
  candidate; ``1-1`` = a chain of two);
* ``tri:K``: the paper's upper triangle over all M levels, K, K-1, ... candidates (at least 1);
* ``auto:N``: the N nodes that maximise expected accepted length under the adapter's calibration.

Commas (``1,1``, ``1,``), empty fields and anything else are rejected: the old syntax read
``1`` as K=1 (a 1-1-1 tree), which is not what it says.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from leanlm.core.errors import UserError

MAX_WIDTH = 64
TREE_HELP = (
    "tree: candidates per level separated by '-' ('1' = one level of one candidate, '1-1' = a "
    "chain of two, '3-2-1'), 'tri:K' (the paper's upper triangle K, K-1, .. over all M levels) "
    "or 'auto:N' (N nodes chosen from the adapter's calibration, see --calibrate)"
)


@dataclass(frozen=True)
class TreeSpec:
    """Draft tree as rank paths (prefix-closed, sorted by level then ranks) and a display name."""

    paths: tuple[tuple[int, ...], ...]
    name: str = ""

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[int]], name: str = "") -> TreeSpec:
        tup = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
        have = set(tup)
        for p in tup:
            if not p or any(r < 0 for r in p):
                raise UserError(f"tree path {p}: ranks must be >= 0 and paths non-empty")
            if len(p) > 1 and p[:-1] not in have:
                raise UserError(f"tree path {p}: its parent {p[:-1]} is not in the tree")
        if not tup:
            raise UserError("a draft tree needs at least one node")
        return cls(tuple(tup), name)

    @classmethod
    def from_widths(cls, widths: Sequence[int]) -> TreeSpec:
        """Upper triangle: level m holds ranks 0 .. widths[m]-1 under the top-1 node of level m-1."""
        widths = [int(w) for w in widths]
        if any(w < 1 or w > MAX_WIDTH for w in widths):
            raise UserError(f"tree {'-'.join(map(str, widths))}: widths must be between 1 and {MAX_WIDTH}")
        paths = [(0,) * m + (c,) for m, w in enumerate(widths) for c in range(w)]
        return cls.from_paths(paths, "-".join(str(w) for w in widths))

    @classmethod
    def triangle(cls, num_candidates: int, num_masks: int) -> TreeSpec:
        """The paper's tree: K, K-1, ... candidates per level (at least 1), over M levels."""
        if int(num_candidates) < 1:
            raise UserError(f"tri:K needs K (num_candidates) >= 1, got {num_candidates}")
        return cls.from_widths([max(int(num_candidates) - m, 1) for m in range(num_masks)])

    @classmethod
    def parse(cls, spec: Any, num_masks: int, calibration: Any = None) -> TreeSpec:
        """See the module docstring. ``spec``: a TreeSpec, a string, or (Python callers) a sequence
        of per-level widths. ``calibration``: a ``Calibration`` for ``auto:N``."""
        if spec is None:
            tree = cls.triangle(5, num_masks)
        elif isinstance(spec, TreeSpec):
            tree = spec
        elif isinstance(spec, (list, tuple)):
            tree = cls.from_widths(spec)
        else:
            text = str(spec).strip()
            if "," in text:
                raise UserError(
                    f"tree {text!r}: commas are ambiguous; write levels with '-' (e.g. '1-1' for a "
                    f"chain of two, '1' for one level). {TREE_HELP}"
                )
            if re.fullmatch(r"\d+(-\d+)*", text):
                tree = cls.from_widths([int(x) for x in text.split("-")])
            elif m := re.fullmatch(r"tri:(\d+)", text):
                tree = cls.triangle(int(m.group(1)), num_masks)
            elif m := re.fullmatch(r"auto:(\d+)", text):
                if calibration is None:
                    raise UserError(
                        f"tree {text!r} needs the adapter's calibration: run bita-eval --calibrate first"
                    )
                from leanlm.bita.calibration import choose_tree

                tree = choose_tree(calibration, int(m.group(1)), num_masks)
            else:
                raise UserError(f"tree {text!r} not understood. {TREE_HELP}")
        if not 1 <= tree.depth <= num_masks:
            raise UserError(f"tree {tree.label()}: needs 1 to M={num_masks} levels, has {tree.depth}")
        return tree

    # ------------------------------------------------------------------ properties

    @property
    def depth(self) -> int:
        return max(len(p) for p in self.paths)

    @property
    def num_candidates(self) -> int:
        return len(self.paths)

    @property
    def ranks_per_level(self) -> list[int]:
        """How many top tokens of mask m the tree uses (max rank + 1 at level m)."""
        out = [0] * self.depth
        for p in self.paths:
            out[len(p) - 1] = max(out[len(p) - 1], p[-1] + 1)
        return out

    @property
    def widths(self) -> tuple[int, ...]:
        """Nodes per level."""
        out = [0] * self.depth
        for p in self.paths:
            out[len(p) - 1] += 1
        return tuple(out)

    def parents(self) -> list[int]:
        """Step-tree parents: node 0 is the root (parent -1), node i >= 1 is ``paths[i-1]``."""
        index = {p: i + 1 for i, p in enumerate(self.paths)}
        return [-1] + [index.get(p[:-1], 0) for p in self.paths]

    def label(self) -> str:
        return self.name or ";".join("/".join(map(str, p)) for p in self.paths)


class StepTree:
    """One step's token layout (tensors on ``device``).

    Order: root (0), candidate nodes 1 .. C (every parent before its children), then group g of
    D masks for every node g at rows ``1 + C + g*D + k``. ``block`` [q, q] bool: visibility among
    the step's tokens (a node sees its ancestors and itself; mask k of group g sees node g's path
    and masks 0..k of its group). ``rel_pos`` [q]: positions relative to the root (node depth,
    mask k of group g at depth(g) + 1 + k). ``mask_rows`` [q]: the rows that see the prefix.
    ``anc`` [1+C, 1+C] bool: ``anc[i, j]`` = j is i or an ancestor of i (for verification).
    """

    def __init__(self, parents: Sequence[int], num_masks: int, device: Any = "cpu"):
        parents = list(parents)
        if not parents or parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents) if i):
            raise ValueError(f"parents must start with -1 and point backwards: {parents}")
        D = int(num_masks)
        n_nodes = len(parents)
        C = n_nodes - 1
        self.parents, self.C, self.M = parents, C, D
        self.q = q = n_nodes + n_nodes * D
        depth = [0] * n_nodes
        path: list[list[int]] = [[0]]
        for i in range(1, n_nodes):
            depth[i] = depth[parents[i]] + 1
            path.append(path[parents[i]] + [i])
        self.depth = depth
        self.node_path = [p[1:] for p in path]  # accepted nodes root -> i (root excluded)
        self.children: list[list[int]] = [[] for _ in range(n_nodes)]
        for i in range(1, n_nodes):
            self.children[parents[i]].append(i)
        block = torch.zeros(q, q, dtype=torch.bool)
        rel = torch.zeros(q, dtype=torch.long)
        for i in range(n_nodes):
            block[i, path[i]] = True
            rel[i] = depth[i]
        for g in range(n_nodes):
            first = n_nodes + g * D
            for k in range(D):
                row = first + k
                block[row, path[g]] = True
                block[row, first : row + 1] = True
                rel[row] = depth[g] + 1 + k
        mask_rows = torch.zeros(q, dtype=torch.bool)
        mask_rows[n_nodes:] = True
        self.block, self.rel_pos, self.mask_rows = block.to(device), rel.to(device), mask_rows.to(device)
        self.anc = block[:n_nodes, :n_nodes].to(device)
        self.parent_index = torch.tensor([0] + parents[1:], device=device)
        # deepest node wins; among equally deep ones the first (scores are distinct)
        order = torch.tensor([d * (n_nodes + 1) + (n_nodes - i) for i, d in enumerate(depth)])
        self.score = order.to(device)
        self._small_masks: dict[Any, torch.Tensor] = {}

    def group_rows(self, node: int) -> slice:
        first = 1 + self.C + node * self.M
        return slice(first, first + self.M)

    def small_mask(self, num_prefix: int, groups: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask [groups*q, P+q] over ``[prefix | this step's tokens]``, rows repeated for the
        ``groups`` query heads that share one KV head (the context part needs no mask)."""
        key = (num_prefix, groups, dtype)
        if key not in self._small_masks:
            vis = torch.cat([self.mask_rows.unsqueeze(1).expand(self.q, num_prefix), self.block], dim=1)
            add = torch.zeros(vis.shape, dtype=dtype, device=vis.device).masked_fill_(
                ~vis, torch.finfo(dtype).min
            )
            self._small_masks[key] = add.repeat(groups, 1)
        return self._small_masks[key]


def verify_greedy(pred: torch.Tensor, tokens: torch.Tensor, tree: StepTree) -> tuple[list[int], int]:
    """Greedy acceptance, a pure function of the verifier's argmax and the tree.

    pred [1+C]: argmax of the base model's logits at the root and every node; tokens [C]: the
    candidates' tokens. A node is accepted when its token equals its parent's argmax and its parent
    is accepted; the deepest accepted node ends the path and its argmax is the bonus token. Returns
    (accepted nodes root -> leaf, root excluded; bonus token). Every emitted token is the base
    model's greedy choice after the previous ones, so the output equals greedy decoding.
    """
    ok = torch.ones(tree.C + 1, dtype=torch.bool, device=pred.device)
    if tree.C:
        ok[1:] = tokens == pred[tree.parent_index[1:]]
    path_ok = ~(tree.anc & ~ok).any(-1)
    best = int(torch.where(path_ok, tree.score, -1).argmax())
    return tree.node_path[best], int(pred[best])


def verify_sample(
    probs: torch.Tensor, tokens: Sequence[int], tree: StepTree, generator: torch.Generator
) -> tuple[list[int], int]:
    """Speculative sampling over a tree of deterministic drafts (multi-draft rejection sampling).

    probs [1+C, V]: the base model's (warped) next-token distribution p at the root and each node.
    At node u with children c1, c2, ..: accept c_j with probability p(c_j) (= min(1, p/q) for a
    draft q that is a point mass), else remove c_j from p and renormalise (the residual
    max(0, p - q)) and try the next child. When no child is accepted, sample the bonus token from
    what is left. Each emitted token is distributed exactly as p given the tokens before it.
    """
    node, path = 0, []
    while True:
        p = probs[node].double().cpu()
        moved = False
        for child in tree.children[node]:
            x = int(tokens[child - 1])
            px = float(p[x]) / float(p.sum())
            if px > 0 and float(torch.rand((), generator=generator, dtype=torch.float64)) < px:
                path.append(child)
                node, moved = child, True
                break
            p[x] = 0.0
        if not moved:
            bonus = int(torch.multinomial((p / p.sum()).float(), 1, generator=generator))
            return path, bonus
