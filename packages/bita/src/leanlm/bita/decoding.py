"""Lossless BiTA decoding: tree draft-and-verify in one forward, with a KV cache.

State between steps: the cache holds ``[prefix (P) | context x_0 .. x_{n-1}]``; the last accepted
token ``x_n`` (the *root*) is not yet in the cache. Drafts for positions ``n+1 .. n+D`` come from
the previous step's mask predictions: node ``(r0, .., rm)`` of the tree (``trees.py``) holds rank
``rm`` of mask m. With ``lookup_tokens`` > 0 a prompt-lookup branch (the tokens that followed the
latest earlier occurrence of the last n-gram of the text) is merged into the same tree (hybrid
drafts).

One step feeds ``[root | candidates | one group of D masks per node]`` (``StepTree``):

* candidate nodes see the context and their own path, never the prefix or any mask, so their
  logits are the base model's;
* the group of node g sees the prefix, the context, g's path and its own earlier masks.

Verification (``trees.verify_greedy``, a pure function of the argmax and the tree): the deepest
node whose every token equals its parent's argmax is accepted, its argmax is the bonus token. So
every emitted token is the base model's greedy choice and the output equals greedy decoding token
for token (in fp32; in bf16 a multi-token forward rounds differently from one-token steps, so a
near-tie can flip, see the README). With ``temperature`` > 0, ``trees.verify_sample`` applies the
speculative acceptance rule instead and the output follows the base model's sampling distribution.
The cache then keeps only the root and the accepted nodes; the next drafts come from the group of
the last accepted node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from leanlm.bita.engine import FastEngine, HFEngine, fast_supported
from leanlm.bita.model import BiTAModel
from leanlm.bita.trees import StepTree, TreeSpec, verify_greedy, verify_sample
from leanlm.core.errors import UserError
from leanlm.core.generation.hf import end_token_ids, until_end

__all__ = [
    "BiTADecoder",
    "DecodeOutput",
    "TreeSpec",
    "greedy_reference",
    "lookup_draft",
    "merge_chain",
    "split_method",
]


@dataclass
class DecodeOutput:
    tokens: list[int]
    forwards: int = 0  # model calls, prefill included
    accepted: list[int] = field(default_factory=list)  # tokens kept per forward (sums to len(tokens))
    seconds: float = 0.0

    @property
    def mean_accepted(self) -> float:
        """Tokens per forward, the bonus token included (Spec-Bench's #mean accepted tokens); tokens
        of the last step cut off by EOS or the token budget are not counted."""
        return sum(self.accepted) / max(1, len(self.accepted))


_NO_TOKENIZER = SimpleNamespace(eos_token_id=None)  # the decoder knows only the ids it is given


def _end_ids(eos_token_id: int | Iterable[int] | None) -> set[int]:
    """``eos_token_id`` as HF's generate takes it (one id, several, or None) -> the set of end ids,
    read the way core reads a generation config's."""
    ids = list(eos_token_id) if isinstance(eos_token_id, Iterable) else eos_token_id
    return end_token_ids(SimpleNamespace(eos_token_id=ids), _NO_TOKENIZER)


def lookup_draft(history: torch.Tensor, num_tokens: int, max_ngram: int = 3) -> list[int]:
    """Prompt lookup: for n = max_ngram .. 1, the latest earlier occurrence of the last n tokens of
    ``history`` [T] (CPU, long); returns up to ``num_tokens`` tokens that followed it ([] if none)."""
    T = history.numel()
    for n in range(min(int(max_ngram), T - 1), 0, -1):
        windows = history[:-1].unfold(0, n, 1)  # window j = history[j : j+n], j + n <= T - 1
        hits = (windows == history[-n:]).all(1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return history[start : start + int(num_tokens)].tolist()
    return []


def merge_chain(tokens: list[int], parents: list[int], chain: Sequence[int]) -> tuple[list[int], list[int]]:
    """Add the token chain under the root of a step tree (``parents[0] = -1``, ``tokens[i-1]`` is node
    i's token), following existing nodes while their tokens agree, so no two siblings repeat a token."""
    tokens, parents = list(tokens), list(parents)
    children: dict[tuple[int, int], int] = {(parents[i], tokens[i - 1]): i for i in range(1, len(parents))}
    node = 0
    for tok in chain:
        key = (node, int(tok))
        if key in children:
            node = children[key]
            continue
        parents.append(node)
        tokens.append(int(tok))
        node = len(parents) - 1
        children[key] = node
    return tokens, parents


def split_method(spec: str) -> tuple[str, int]:
    """``"<tree>+pld:L"`` -> (tree text, L lookup tokens); a plain tree -> (tree, 0)."""
    text = str(spec).strip()
    tree, plus, extra = text.partition("+")
    if not plus:
        return text, 0
    if not extra.startswith("pld:") or not extra[4:].isdigit() or int(extra[4:]) < 1:
        raise UserError(
            f"method {text!r}: a hybrid is written <tree>+pld:L with L >= 1 lookup tokens, e.g. 1+pld:3"
        )
    return tree.strip(), int(extra[4:])


def warp_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution [n, V] from logits [n, V]: softmax(logits / T), then nucleus filtering
    (keep the most likely tokens until their mass reaches ``top_p``, at least one) renormalised."""
    probs = torch.softmax(logits.float() / float(temperature), dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
        keep_sorted = before < float(top_p)
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@dataclass
class DecodeState:
    """One generation in progress (``BiTADecoder.start`` / ``step``)."""

    history: list[int]
    history_t: torch.Tensor  # the same tokens, CPU, preallocated (prompt lookup)
    max_new_tokens: int
    eos: set[int]
    out: DecodeOutput
    drafts: list[list[int]] | None = None
    done: bool = False
    t0: float = 0.0


class BiTADecoder:
    """Tree decoding for batch size 1.

    engine: ``auto`` (the preallocated-cache ``FastEngine`` where the model is LLaMA-family, else
    ``hf``), ``fast`` or ``hf`` (the HF decoder with a DynamicCache). ``use_cache=False``
    recomputes the context every step (the original's way; a reference for tests).
    lookup_tokens > 0 adds a prompt-lookup branch of that many tokens (n-grams up to
    ``lookup_ngram``). temperature > 0 samples (nucleus ``top_p``) with speculative acceptance,
    seeded by ``seed``.
    """

    def __init__(
        self,
        model: BiTAModel,
        tree: TreeSpec | str | Sequence[int] | int | None = None,
        use_cache: bool = True,
        *,
        engine: str = "auto",
        lookup_tokens: int = 0,
        lookup_ngram: int = 3,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        calibration: Any = None,
    ):
        self.model = model
        self.tree = TreeSpec.parse(tree, model.num_masks, calibration)
        if not 0 <= int(lookup_tokens) <= 64:
            raise UserError(f"lookup_tokens must be between 0 and 64, got {lookup_tokens}")
        if int(lookup_ngram) < 1:
            raise UserError(f"lookup_ngram must be at least 1, got {lookup_ngram}")
        if float(temperature) < 0 or not 0.0 < float(top_p) <= 1.0:
            raise UserError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        self.lookup_tokens, self.lookup_ngram = int(lookup_tokens), int(lookup_ngram)
        self.temperature, self.top_p, self.seed = float(temperature), float(top_p), int(seed)
        self.use_cache = use_cache
        dev = model.device
        self.depth = self.tree.depth
        self.mask_ids = torch.tensor(model.mask_ids()[: self.depth], device=dev)
        self._parents = self.tree.parents()
        self._node_level_rank = [(len(p) - 1, p[-1]) for p in self.tree.paths]
        self._ranks = self.tree.ranks_per_level
        self._layouts: dict[tuple[int, ...], StepTree] = {}
        self.layout = self._layout(self._parents)
        if engine not in {"auto", "fast", "hf"}:
            raise UserError(f"engine must be auto, fast or hf, got {engine!r}")
        if not use_cache:
            self.engine: Any = HFEngine(model, use_cache=False)
        elif engine == "hf" or (engine == "auto" and not fast_supported(model)):
            self.engine = HFEngine(model)
        else:
            if not fast_supported(model):
                raise UserError(
                    f"engine 'fast' supports {sorted({'llama', 'mistral', 'qwen2', 'qwen3'})} models"
                )
            self.engine = FastEngine(model)
        self.engine_name = type(self.engine).__name__
        # calibration hook: when a list, every step appends (new tokens known, top-R ids per mask)
        self.record: list[tuple[int, list[list[int]]]] | None = None
        self.record_ranks = 10

    def label(self) -> str:
        """The tree's label, with ``+pld:L`` for a hybrid."""
        return self.tree.label() + (f"+pld:{self.lookup_tokens}" if self.lookup_tokens else "")

    def _layout(self, parents: Sequence[int]) -> StepTree:
        key = tuple(parents)
        lay = self._layouts.get(key)
        if lay is None:
            if len(self._layouts) > 256:  # hybrid trees vary with the lookup branch
                self._layouts.clear()
            lay = self._layouts[key] = StepTree(key, self.depth, self.model.device)
        return lay

    def _drafts(self, mask_logits: torch.Tensor, produced: int) -> list[list[int]]:
        """Top tokens of each mask, as many as the tree uses at that level. mask_logits: [D, V].

        ``produced``: new tokens known so far (level m drafts new token number produced + m);
        unused here, a hook for tests and alternative drafters."""
        k = max(self._ranks)
        top = mask_logits[: self.depth].topk(k, dim=-1).indices.tolist()
        return [row[:w] for row, w in zip(top, self._ranks, strict=True)]

    @torch.no_grad()
    def run_once(self, context: torch.Tensor, cands: torch.Tensor, tree: StepTree) -> torch.Tensor:
        """One forward from an empty cache: ``context`` [n] (its last token is the root) then the
        tree; hidden states of the tree rows [q, H] (for tests and diagnostics)."""
        ctx = torch.as_tensor(context, dtype=torch.long, device=self.model.device).reshape(-1)
        self.engine.reset(ctx.numel() + tree.q + 1)
        return self.engine.run(ctx[:-1], int(ctx[-1]), cands.to(ctx.device), self.mask_ids, tree)

    # ------------------------------------------------------------------ the loop

    def start(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        max_new_tokens: int = 256,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> DecodeState:
        """Set up a generation; the first ``step`` is the prefill."""
        prompt = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1).cpu()
        if prompt.numel() == 0:
            raise UserError("empty prompt: BiTA decoding needs at least one prompt token")
        if int(max_new_tokens) < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        max_new = int(max_new_tokens)
        biggest_c = self.tree.num_candidates + self.lookup_tokens
        slack = self.tree.depth + self.lookup_tokens + 2
        self.engine.reset(prompt.numel() + max_new + slack + (1 + biggest_c) * (1 + self.depth))
        hist = torch.zeros(prompt.numel() + max_new + slack, dtype=torch.long)
        hist[: prompt.numel()] = prompt
        self._generator = torch.Generator().manual_seed(self.seed)
        return DecodeState(
            history=prompt.tolist(),
            history_t=hist,
            max_new_tokens=max_new,
            eos=_end_ids(eos_token_id),
            out=DecodeOutput(tokens=[]),
            t0=time.perf_counter(),
        )

    @torch.no_grad()
    def step(self, st: DecodeState) -> list[int]:
        """One draft-and-verify forward; returns the tokens it emitted."""
        m = self.model
        dev = m.device
        root = st.history[-1]
        if st.drafts is None:
            tokens, parents = [], [-1]
        else:
            tokens = [st.drafts[lv][r] for lv, r in self._node_level_rank]
            parents = self._parents
        if self.lookup_tokens:
            chain = lookup_draft(st.history_t[: len(st.history)], self.lookup_tokens, self.lookup_ngram)
            if chain:
                tokens, parents = merge_chain(tokens, parents, chain)
        tree = self._layout(parents)
        cands = torch.tensor(tokens, dtype=torch.long, device=dev)
        new_ctx = torch.tensor(st.history[self.engine.n : -1], dtype=torch.long, device=dev)
        hidden = self.engine.run(new_ctx, root, cands, self.mask_ids, tree)
        # One LM-head call for every row (root, candidates and all mask groups): the head is the
        # largest matrix, and one call over q rows costs far less than two calls over a few rows
        # each (small-row matmuls run one weight pass per row on CPU).
        logits = m.logits(hidden)
        if self.temperature > 0:
            probs = warp_probs(logits[: 1 + tree.C], self.temperature, self.top_p)
            path, bonus = verify_sample(probs, tokens, tree, self._generator)
        else:
            path, bonus = verify_greedy(logits[: 1 + tree.C].argmax(-1), cands, tree)
        self.engine.accept(path)
        emitted = [tokens[node - 1] for node in path] + [bonus]
        out = st.out
        produced = len(out.tokens) + len(emitted)
        group = logits[tree.group_rows(path[-1] if path else 0)]
        st.drafts = self._drafts(group, produced)
        if self.record is not None:
            self.record.append((produced, group.topk(self.record_ranks, dim=-1).indices.tolist()))
        out.forwards += 1
        out.accepted.append(len(emitted))
        out.tokens.extend(emitted)
        n0 = len(st.history)
        st.history.extend(emitted)
        if n0 + len(emitted) <= st.history_t.numel():
            st.history_t[n0 : n0 + len(emitted)] = torch.tensor(emitted)
        if any(tok in st.eos for tok in emitted) or len(out.tokens) >= st.max_new_tokens:
            self._finish(st)
        return emitted

    @staticmethod
    def _finish(st: DecodeState) -> None:
        """Stop exactly where plain decoding would (first EOS, or the token budget); the last
        step's count keeps only the tokens that remain."""
        out = st.out
        kept = until_end(out.tokens, st.eos)[: st.max_new_tokens]
        out.tokens[:] = kept  # in place: a caller may hold the list
        excess = sum(out.accepted) - len(out.tokens)
        if excess:
            out.accepted[-1] -= excess
            assert out.accepted[-1] >= 1, "truncation removed a whole step"
        st.done = True
        out.seconds = time.perf_counter() - st.t0

    @torch.no_grad()
    def generate(
        self,
        input_ids: Sequence[int] | torch.Tensor,
        max_new_tokens: int = 256,
        eos_token_id: int | Sequence[int] | None = None,
    ) -> DecodeOutput:
        """Continuation of ``input_ids`` (1-D, batch size 1); greedy (identical to greedy decoding)
        unless the decoder samples."""
        m = self.model
        was_training = m.training
        m.eval()
        try:
            st = self.start(input_ids, max_new_tokens, eos_token_id)
            while not st.done:
                self.step(st)
        finally:
            m.train(was_training)
        return st.out


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
