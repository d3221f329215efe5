"""Lossless greedy BiTA decoding: tree draft-and-verify in one forward, with a KV cache.

State between steps: the cache holds ``[prefix (P) | context x_0 .. x_{n-1}]``; the last accepted
token ``x_n`` (the *root*) is not yet in the cache. Drafts for positions ``n+1 .. n+D`` come from
the previous step's mask predictions: level m holds the top-``widths[m]`` tokens of mask m.

One step feeds ``[root | candidates | one mask group per tree node]``:

* the tree ("upper triangle"): candidate (m, c) hangs off the top-1 node of level m-1 (the root
  for m = 0), so only the top-1 spine has children; candidate (m, c) sits at position n+1+m;
* group g of D masks (D = tree depth <= M) hangs off node g (0 = root): it sees the prefix, the context, the node's path
  and its own earlier masks; mask k sits at position p+1+k for a node at position p;
* root and candidates never see the prefix or any mask: their logits are the base model's.

Verification: t = argmax at the root; while t equals a candidate of the next level, accept it and
take t = argmax at that candidate (stop after a non-spine candidate, it has no children). The
final t is the bonus token. 1 .. D+1 tokens per forward; every one is the base model's own greedy
choice, so the output equals greedy decoding token for token. The cache then keeps only the
root and the accepted candidates; the next drafts come from the group of the last accepted node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from leanlm.bita.model import BiTAModel, additive_mask
from leanlm.core.errors import UserError


@dataclass(frozen=True)
class TreeSpec:
    """Candidates per tree level; ``widths[m]`` top tokens of mask m (len(widths) <= M)."""

    widths: tuple[int, ...]

    @classmethod
    def from_k(cls, num_candidates: int, num_masks: int, depth: int | None = None) -> TreeSpec:
        """The paper's upper-triangle tree: K, K-1, ... candidates per level (at least 1), ``depth`` levels."""
        depth = num_masks if depth is None else depth
        if int(num_candidates) < 1:
            raise UserError(f"num_candidates (K) must be at least 1, got {num_candidates}")
        if not 1 <= int(depth) <= num_masks:
            raise UserError(f"tree depth must be between 1 and M={num_masks}, got {depth}")
        return cls(tuple(max(int(num_candidates) - m, 1) for m in range(int(depth))))

    @classmethod
    def parse(cls, spec: str | Sequence[int] | int | None, num_masks: int) -> TreeSpec:
        """``"3,2,1"`` / ``[3, 2, 1]`` (explicit widths) or an int K (upper triangle over M levels)."""
        if spec is None:
            return cls.from_k(5, num_masks)
        if isinstance(spec, int):
            return cls.from_k(spec, num_masks)
        if isinstance(spec, str):
            text = spec.strip()
            if text.isdigit():
                return cls.from_k(int(text), num_masks)
            try:
                spec = [int(x) for x in text.replace("-", ",").split(",") if x.strip()]
            except ValueError:
                raise UserError(f"tree {text!r}: expected widths like '3,2,1' or an integer K") from None
        widths = tuple(int(w) for w in spec)
        if not 1 <= len(widths) <= num_masks:
            raise UserError(f"tree {list(widths)}: needs 1 to M={num_masks} levels")
        if any(w < 1 or w > 64 for w in widths):
            raise UserError(f"tree {list(widths)}: widths must be between 1 and 64")
        return cls(widths)

    @property
    def num_candidates(self) -> int:
        return sum(self.widths)

    def label(self) -> str:
        return "-".join(str(w) for w in self.widths)


class TreeLayout:
    """Static per-step structure for a tree: indices, relative positions and the in-step mask.

    Step input order: root (0), candidates level-major (1 .. C), then group g (0 .. C) masks at
    ``1 + C + g*M + k``. ``rel_pos``: positions relative to the root. ``block``: [q, q] bool
    visibility among step tokens; ``mask_rows``: [q] bool, rows that see the prefix.
    """

    def __init__(self, widths: Sequence[int], num_masks: int):
        # A group needs only as many masks as the tree has levels: mask k sees masks 0..k only,
        # so dropping masks >= depth leaves the others' predictions unchanged (and saves tokens).
        M = num_masks
        self.widths = list(widths)
        self.level_start = [sum(self.widths[:m]) for m in range(len(self.widths))]
        C = sum(self.widths)
        self.C, self.M = C, M
        q = 1 + C + (C + 1) * M
        self.q = q
        depth = [0]  # node depth (root 0, level m -> m+1), node index = step index for root/candidates
        ancestors: list[list[int]] = [[0]]
        for m, w in enumerate(self.widths):
            parent = 0 if m == 0 else 1 + self.level_start[m - 1]  # top-1 node of level m-1
            for _c in range(w):
                node = len(depth)
                depth.append(m + 1)
                ancestors.append(ancestors[parent] + [node])
        block = torch.zeros(q, q, dtype=torch.bool)
        rel = torch.zeros(q, dtype=torch.long)
        for node in range(1 + C):
            block[node, ancestors[node]] = True
            rel[node] = depth[node]
        for g in range(1 + C):
            first = 1 + C + g * M
            for k in range(M):
                row = first + k
                block[row, ancestors[g]] = True
                block[row, first : row + 1] = True
                rel[row] = depth[g] + 1 + k
        self.block = block
        self.rel_pos = rel
        self.mask_rows = torch.zeros(q, dtype=torch.bool)
        self.mask_rows[1 + C :] = True

    def group_rows(self, node: int) -> slice:
        first = 1 + self.C + node * self.M
        return slice(first, first + self.M)


@dataclass
class DecodeOutput:
    tokens: list[int]
    forwards: int = 0  # model calls, prefill included
    accepted: list[int] = field(default_factory=list)  # tokens emitted per forward
    seconds: float = 0.0

    @property
    def mean_accepted(self) -> float:
        """Tokens per forward, the bonus token included (Spec-Bench's #mean accepted tokens)."""
        return sum(self.accepted) / max(1, len(self.accepted))


def _eos_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return {int(e) for e in eos_token_id}


class BiTADecoder:
    """Greedy tree decoding for batch size 1. ``use_cache=False`` recomputes the context every
    step (the original's way; kept as a reference for tests)."""

    def __init__(
        self,
        model: BiTAModel,
        tree: TreeSpec | str | Sequence[int] | int | None = None,
        use_cache: bool = True,
    ):
        self.model = model
        self.tree = tree if isinstance(tree, TreeSpec) else TreeSpec.parse(tree, model.num_masks)
        if len(self.tree.widths) > model.num_masks:
            raise UserError(f"tree {self.tree.label()} is deeper than M={model.num_masks}")
        self.use_cache = use_cache
        dev = model.device
        depth = len(self.tree.widths)
        self.layout = TreeLayout(self.tree.widths, depth)
        self.prefill_layout = TreeLayout([], depth)
        for lay in (self.layout, self.prefill_layout):
            lay.block, lay.rel_pos, lay.mask_rows = (
                lay.block.to(dev),
                lay.rel_pos.to(dev),
                lay.mask_rows.to(dev),
            )
        self.mask_ids = torch.tensor(model.mask_ids()[:depth], device=dev)

    # ------------------------------------------------------------------ one forward

    def _forward(
        self, cache: Any, cached: int, new_ctx: torch.Tensor, root: int, cands: torch.Tensor, lay: TreeLayout
    ) -> torch.Tensor:
        """Run ``[new_ctx | root | cands | groups]``; returns hidden states of the tree part [q, H].

        ``cached``: context tokens already in the cache (after the P prefix entries).
        """
        m = self.model
        dev = m.device
        a = new_ctx.numel()
        n = cached + a  # root position
        P = m.num_prefix
        ids = torch.cat([new_ctx, torch.tensor([root], device=dev), cands, self.mask_ids.repeat(lay.C + 1)])
        pos = torch.cat([torch.arange(cached, n, device=dev), n + lay.rel_pos])
        q = lay.q
        # keys: [prefix P | cached ctx | new ctx a | tree q]
        tree_rows = torch.cat(
            [
                lay.mask_rows.unsqueeze(1).expand(q, P),
                torch.ones(q, cached + a, dtype=torch.bool, device=dev),
                lay.block,
            ],
            dim=1,
        )
        if a:
            ctx_rows = torch.cat(
                [
                    torch.zeros(a, P, dtype=torch.bool, device=dev),
                    torch.ones(a, cached, dtype=torch.bool, device=dev),
                    torch.ones(a, a, dtype=torch.bool, device=dev).tril(),
                    torch.zeros(a, q, dtype=torch.bool, device=dev),
                ],
                dim=1,
            )
            visible = torch.cat([ctx_rows, tree_rows], dim=0)
        else:
            visible = tree_rows
        mask = additive_mask(visible, m.dtype)[None, None]
        hidden = m.hidden_states(ids[None], mask, pos[None], cache)[0]
        return hidden[a:]

    def _drafts(self, mask_logits: torch.Tensor, produced: int) -> list[list[int]]:
        """Level m candidates = top-widths[m] tokens of mask m. mask_logits: [M, V].

        ``produced``: new tokens known so far (level m drafts new token number produced + m);
        unused here, a hook for tests and alternative drafters."""
        k = max(self.tree.widths)
        top = mask_logits[: len(self.tree.widths)].topk(k, dim=-1).indices.tolist()
        return [row[:w] for row, w in zip(top, self.tree.widths, strict=True)]

    @staticmethod
    def _keep(cache: Any, keep_len: int, extra: list[int]) -> None:
        """Crop every layer to ``keep_len`` entries plus the entries at ``extra`` (sorted, > keep_len)."""
        for layer in cache.layers:
            if extra:
                idx = torch.tensor(list(range(keep_len)) + extra, device=layer.keys.device)
                layer.keys = layer.keys.index_select(-2, idx)
                layer.values = layer.values.index_select(-2, idx)
            else:
                layer.keys = layer.keys[..., :keep_len, :]
                layer.values = layer.values[..., :keep_len, :]

    # ------------------------------------------------------------------ the loop

    @torch.no_grad()
    def generate(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        max_new_tokens: int = 256,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> DecodeOutput:
        """Greedy continuation of ``input_ids`` (1-D, batch size 1), identical to greedy decoding."""
        m = self.model
        dev = m.device
        prompt = torch.as_tensor(input_ids, dtype=torch.long, device=dev).reshape(-1)
        if prompt.numel() == 0:
            raise UserError("empty prompt: BiTA decoding needs at least one prompt token")
        if int(max_new_tokens) < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        eos = _eos_set(eos_token_id)
        P = m.num_prefix
        t0 = time.perf_counter()
        was_training = m.training
        m.eval()
        out = DecodeOutput(tokens=[])
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        try:
            # prefill: the prompt minus its last token is context, the last token is the root of an empty tree
            cache = m.prefix_cache(1)
            pl = self.prefill_layout
            logits = m.logits(self._forward(cache, 0, prompt[:-1], int(prompt[-1]), empty, pl))
            t = int(logits[0].argmax(-1))
            drafts = self._drafts(logits[pl.group_rows(0)], 1)
            n = prompt.numel()  # tokens in context incl. root; new root t sits at position n
            self._keep(cache, P + n, [])
            history = prompt.tolist()
            out.forwards, out.accepted = 1, [1]
            emitted = [t]
            lay = self.layout
            while True:
                out.tokens.extend(emitted)
                if any(tok in eos for tok in emitted) or len(out.tokens) >= max_new_tokens:
                    break
                history.extend(emitted)
                root = emitted[-1]
                cands = torch.tensor([tok for level in drafts for tok in level], device=dev)
                if self.use_cache:
                    h = self._forward(cache, n, empty, root, cands, lay)
                else:
                    cache = m.prefix_cache(1)
                    h = self._forward(cache, 0, torch.tensor(history[:-1], device=dev), root, cands, lay)
                # One LM-head call for every row (root, candidates and all mask groups): the head
                # is the largest matrix, and one call over q rows costs far less than two calls
                # over a few rows each (small-row matmuls run one weight pass per row on CPU).
                logits = m.logits(h)
                pred = logits[: 1 + lay.C].argmax(-1).tolist()
                t, path = pred[0], []
                for level, options in enumerate(drafts):
                    if t not in options:
                        break
                    c = options.index(t)
                    node = 1 + lay.level_start[level] + c
                    path.append(node)
                    t = pred[node]
                    if c > 0:  # only the top-1 node has children
                        break
                flat = [tok for level in drafts for tok in level]
                emitted = [flat[node - 1] for node in path] + [t]
                owner = path[-1] if path else 0
                drafts = self._drafts(logits[lay.group_rows(owner)], len(out.tokens) + len(emitted))
                if self.use_cache:
                    self._keep(cache, P + n + 1, [P + n + p for p in path])
                n += 1 + len(path)
                out.forwards += 1
                out.accepted.append(len(emitted))
            # stop exactly where greedy decoding would: first EOS, or the token budget
            for i, tok in enumerate(out.tokens):
                if tok in eos:
                    del out.tokens[i + 1 :]
                    break
            del out.tokens[max_new_tokens:]
        finally:
            m.train(was_training)
        out.seconds = time.perf_counter() - t0
        return out


def greedy_reference(
    base: Any, input_ids: Sequence[int], max_new_tokens: int, eos_token_id: Any = None
) -> list[int]:
    """``base.generate(do_sample=False)`` continuation as a list (the lossless reference)."""
    ids = torch.as_tensor(list(input_ids), device=base.device)[None]
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "attention_mask": torch.ones_like(ids),
    }
    if eos_token_id is not None:
        kwargs["eos_token_id"] = eos_token_id
    pad = base.generation_config.pad_token_id
    kwargs["pad_token_id"] = pad if pad is not None else 0
    out = base.generate(ids, **kwargs)
    return out[0, ids.shape[1] :].tolist()
