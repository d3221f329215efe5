"""Task metrics plus compute ratios for a D-LLM (or a dense/static baseline wrapped as one).

* ``choice_accuracy``: for the ``number`` format, the next token after the prompt restricted to the
  option numbers "1".."k", and the mean negative log-likelihood of the right number (full vocabulary);
  for the ``text`` format (lm-eval's multiple-choice scoring), the option whose tokens have the highest
  summed log-likelihood given the prompt (``accuracy``) or the highest per character
  (``accuracy_norm``), and the right option's mean NLL per token (``answer_nll``).
* ``response_perplexity``: exp(mean CE over response tokens) of (prompt, response) examples.
* ``text_perplexity``: GPTQ-style: texts joined, cut into ``seqlen`` chunks, exp(mean CE).
Each also returns the mean per-example execution ratio, FLOPs ratio and KV-entries ratio of the
routing decisions taken on the scored tokens (see ``leanlm.dllm.flops``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from leanlm.core.errors import UserError
from leanlm.core.sft import IGNORE_INDEX, PaddingCollator
from leanlm.dllm.data import Example, tokenize
from leanlm.dllm.flops import CostModel, request_costs
from leanlm.dllm.model import DLLM, position_ids_from_mask
from leanlm.dllm.recording import record_decisions


def _mean_costs(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = ("exec_ratio", "exec_ratio_routed", "flops_ratio", "flops_ratio_with_head")
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    out["kv_ratio"] = out["exec_ratio"]  # every executed (token, layer) keeps its K/V, skipped ones none
    return out


def _batch_costs(
    cost: CostModel, execs: torch.Tensor, mask: torch.Tensor, reserve: int = 0
) -> list[dict[str, float]]:
    """Per-row costs. ``exec_ratio`` counts every real token; ``exec_ratio_routed`` skips the first
    ``reserve`` (always-executing) tokens: the tokens the training target applies to."""
    pos = position_ids_from_mask(mask)
    rows = []
    for b in range(len(mask)):
        real = mask[b].bool()
        executed = execs[b][real] > 0.5
        row = request_costs(cost, executed, pos[b][real])
        routed = executed[reserve:]
        row["exec_ratio_routed"] = float(routed.float().mean()) if routed.numel() else 1.0
        rows.append(row)
    return rows


def _reserve(dllm: DLLM) -> int:
    return dllm.config.reserve_initials if dllm.routers else 0


@torch.no_grad()
def choice_accuracy(
    dllm: DLLM, tokenizer: Any, examples: list[Example], batch_size: int = 8, per_example: bool = False
) -> dict[str, Any]:
    """Accuracy on choice examples; ``per_example`` adds lists ``correct`` and ``nll`` (and, in the
    text format, ``correct_norm``) in example order, for paired comparisons of two models."""
    examples = [e for e in examples if e.num_choices > 0]
    if not examples:
        raise UserError(
            "accuracy needs multiple-choice examples (piqa, boolq, social_i_qa, openbookqa, mmlu)"
        )
    if all(e.choices for e in examples):
        return _loglik_accuracy(dllm, tokenizer, examples, batch_size, per_example)
    if any(e.choices for e in examples):
        raise UserError("mixed choice formats: pass examples of one format (number or text)")
    dllm.eval()
    digit_ids = []
    for i in range(1, max(e.num_choices for e in examples) + 1):
        ids = tokenizer(str(i), add_special_tokens=False)["input_ids"]
        digit_ids.append(ids[0])
    cost, collate = CostModel.of(dllm), PaddingCollator(tokenizer.pad_token_id, side="left")
    correct, nll, costs = [], [], []
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        feats = [{"input_ids": tokenizer(e.prompt)["input_ids"]} for e in chunk]
        feats = [f | {"attention_mask": [1] * len(f["input_ids"])} for f in feats]
        batch = collate(feats)
        out = dllm(
            batch["input_ids"].to(dllm.device), batch["attention_mask"].to(dllm.device), last_only=True
        )
        logp = torch.log_softmax(out.logits[:, -1].float(), -1)
        for row, e in enumerate(chunk):
            cand = logp[row, digit_ids[: e.num_choices]]
            correct.append(int(int(cand.argmax()) == e.label))
            nll.append(-float(logp[row, digit_ids[e.label]]))
        costs += _batch_costs(cost, out.execs.cpu(), batch["attention_mask"], _reserve(dllm))
    n = len(examples)
    result = {"accuracy": sum(correct) / n, "answer_nll": sum(nll) / n, "examples": n} | _mean_costs(costs)
    if per_example:
        result["per_example"] = {"correct": correct, "nll": nll}
    return result


def _option_features(tokenizer: Any, e: Example) -> list[dict[str, list[int]]]:
    """prompt + option ids per option, labels on the option tokens only (core's SFT tokenization, no EOS)."""
    from leanlm.core.sft import tokenize_example

    return [
        tokenize_example(tokenizer, e.prompt, c, max_length=10**6, add_eos=False) for c in e.choices or ()
    ]


@torch.no_grad()
def _loglik_accuracy(
    dllm: DLLM, tokenizer: Any, examples: list[Example], batch_size: int, per_example: bool = False
) -> dict[str, Any]:
    """log p(option | prompt) = sum over option tokens t of log softmax(logits[t-1])[token t], per option."""
    dllm.eval()
    cost, collate = CostModel.of(dllm), PaddingCollator(tokenizer.pad_token_id, side="right")
    feats, owner = [], []  # every (example, option) sequence, flattened
    for i, e in enumerate(examples):
        for j, f in enumerate(_option_features(tokenizer, e)):
            feats.append(f)
            owner.append((i, j))
    scores = [[0.0] * e.num_choices for e in examples]
    n_tokens = [[0] * e.num_choices for e in examples]
    costs = []
    for s in range(0, len(feats), batch_size):
        batch = collate(feats[s : s + batch_size])
        out = dllm(batch["input_ids"].to(dllm.device), batch["attention_mask"].to(dllm.device))
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)
        labels = batch["labels"][:, 1:].to(logp.device)
        scored = labels != IGNORE_INDEX
        token_logp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * scored
        for row, (i, j) in enumerate(owner[s : s + batch_size]):
            scores[i][j] = float(token_logp[row].sum())
            n_tokens[i][j] = int(scored[row].sum())
        costs += _batch_costs(cost, out.execs.cpu(), batch["attention_mask"], _reserve(dllm))
    correct, correct_norm, nll = [], [], []
    for e, sc, nt in zip(examples, scores, n_tokens):
        chars = [max(len(c), 1) for c in e.choices or ()]
        correct.append(int(max(range(e.num_choices), key=lambda j: sc[j]) == e.label))
        correct_norm.append(int(max(range(e.num_choices), key=lambda j: sc[j] / chars[j]) == e.label))
        nll.append(-sc[e.label] / max(nt[e.label], 1))
    n = len(examples)
    result = {
        "accuracy": sum(correct) / n,
        "accuracy_norm": sum(correct_norm) / n,
        "answer_nll": sum(nll) / n,
        "examples": n,
    } | _mean_costs(costs)
    if per_example:
        result["per_example"] = {"correct": correct, "correct_norm": correct_norm, "nll": nll}
    return result


@torch.no_grad()
def response_perplexity(
    dllm: DLLM, tokenizer: Any, examples: list[Example], batch_size: int = 8, max_length: int = 512
) -> dict[str, float]:
    dllm.eval()
    cost, collate = CostModel.of(dllm), PaddingCollator(tokenizer.pad_token_id, side="right")
    feats = tokenize(tokenizer, examples, max_length)
    total_nll, total_tokens, costs = 0.0, 0, []
    for s in range(0, len(feats), batch_size):
        batch = collate(feats[s : s + batch_size])
        labels = batch["labels"].to(dllm.device)
        out = dllm(batch["input_ids"].to(dllm.device), batch["attention_mask"].to(dllm.device), labels)
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        total_nll += float(out.ce_loss) * n
        total_tokens += n
        costs += _batch_costs(cost, out.execs.cpu(), batch["attention_mask"], _reserve(dllm))
    return {"perplexity": math.exp(total_nll / max(total_tokens, 1)), "tokens": total_tokens} | _mean_costs(
        costs
    )


def text_perplexity(
    dllm: DLLM, tokenizer: Any, texts: str | list[str] = "text", seqlen: int = 256, max_chunks: int = 16
) -> dict[str, float]:
    """``leanlm.core.evaluation.perplexity`` on the D-LLM, recording the routing decisions it takes."""
    from leanlm.core.evaluation.perplexity import perplexity

    cost = CostModel.of(dllm)
    with record_decisions(dllm) as seen:
        result = perplexity(dllm, tokenizer, texts, seqlen=seqlen, max_chunks=max_chunks)
    costs = [c for execs, mask in seen for c in _batch_costs(cost, execs, mask, _reserve(dllm))]
    return {"perplexity": result["ppl"], "tokens": result["n_tokens"]} | _mean_costs(costs)
