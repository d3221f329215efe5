"""Speed evaluation (Spec-Bench style) and plain BiTA generation.

Methods timed on the same prompts, interleaved per question (so load from other processes hits
all of them alike), batch size 1, greedy:

* ``greedy``: ``model.generate(do_sample=False)`` WITH the KV cache (the baseline and the reference
  output for the equality check);
* ``pld``: HF prompt-lookup decoding (``prompt_lookup_num_tokens``), also lossless;
* ``bita[<tree>]``: BiTA tree decoding for each tree shape asked for; ``bita[<tree>+pld:L]`` adds a
  prompt-lookup branch of L tokens to the same verification forward (hybrid drafts).

Multi-turn questions (Spec-Bench's MT-Bench part) are evaluated turn by turn with ``turns=2``: the
second turn's prompt holds the first question, greedy's first answer (the same for every method,
since all are lossless) and the second question; it is reported as its own row ``<id>-turn2``.

Figures come from ``leanlm.core.evaluation.speed.speed_report``: speedup = total baseline time /
total method time; mean accepted = new tokens / forwards (prefill included, bonus token counted);
equal = outputs token-identical to ``greedy``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from leanlm.bita.decoding import BiTADecoder, TreeSpec, split_method
from leanlm.bita.model import BiTAModel
from leanlm.bita.prompts import instruction_of
from leanlm.core.errors import UserError
from leanlm.core.generation.hf import end_token_ids, until_end
from leanlm.core.sft import encode_prompt  # a rendered chat prompt keeps exactly one BOS
from leanlm.core.templates import format_conversation

log = logging.getLogger(__name__)

HUMANEVAL_PREFIX = "Complete the following python code\n"


def load_eval_prompts(
    data: str,
    tokenizer: Any,
    template: str,
    limit: int | None = None,
    per_category: int | None = None,
    turns: int = 1,
) -> list[dict[str, Any]]:
    """``{"id", "category", "prompt"}`` from a Spec-Bench/MT-Bench question file (first turn), a
    prompt file (records with ``prompt``), HumanEval, or any core dataset. ``per_category`` keeps
    the first N of each category (a fixed subset), ``limit`` the first N overall. ``turns`` > 1
    adds ``followups`` (later user turns, up to ``turns`` in all) and ``template``, for
    ``speed_runs`` to build the later turns' prompts from greedy's answers."""
    from leanlm.core.datasets import load_records
    from leanlm.core.templates import format_prompt

    if turns < 1:
        raise UserError(f"turns must be at least 1, got {turns}")
    records = load_records(data)
    if not records:
        raise UserError(f"{data}: no records")
    out = []
    for i, r in enumerate(records):
        rid = str(r.get("question_id", r.get("id", i)))
        category = str(r.get("category", Path(str(data)).stem if Path(str(data)).exists() else data))
        if "entry_point" in r and "prompt" in r:  # HumanEval: complete the function
            text = format_prompt(template, HUMANEVAL_PREFIX + r["prompt"], tokenizer=tokenizer)
        elif isinstance(r.get("prompt"), str) and "template_tag" in r:  # already templated (bita-gen-prompts)
            text = r["prompt"]
        else:
            instruction, extra = instruction_of(r)
            text = format_prompt(template, instruction, extra or None, tokenizer=tokenizer)
        item = {"id": rid, "category": category, "prompt": text}
        later = r.get("turns", [])[1 : max(1, turns)] if isinstance(r.get("turns"), list) else []
        if later:
            item |= {
                "followups": [str(t) for t in later],
                "turn_texts": [str(r["turns"][0])],
                "template": template,
            }
        out.append(item)
    if per_category:
        seen: dict[str, int] = {}
        kept = []
        for p in out:
            if seen.get(p["category"], 0) < per_category:
                kept.append(p)
                seen[p["category"]] = seen.get(p["category"], 0) + 1
        out = kept
    if limit:
        out = out[:limit]
    return out


class ForwardCounter:
    """Counts calls of a module's forward (the model calls of HF ``generate``)."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.count += 1

    def close(self) -> None:
        self._handle.remove()


def _hf_generate(
    base: Any, ids: list[int], max_new_tokens: int, eos: Any, pad: int, **extra: Any
) -> tuple[list[int], float, int]:
    x = torch.tensor([ids], device=base.device)
    counter = ForwardCounter(base)
    try:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = base.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                **extra,
            )
        seconds = time.perf_counter() - t0
    finally:
        counter.close()
    return out[0, len(ids) :].tolist(), seconds, counter.count


def rounding_step(value: float, dtype: torch.dtype) -> float:
    """Distance between adjacent numbers of ``dtype`` at magnitude |value| (one unit in the last
    place): 2^(floor(log2|x|)) * eps, eps = 2^-7 for bf16, 2^-10 for fp16, 2^-23 for fp32."""
    ax = abs(float(value))
    if ax == 0.0 or not math.isfinite(ax):
        return 0.0
    return (2.0 ** math.floor(math.log2(ax))) * torch.finfo(dtype).eps


def first_divergence(
    base: Any,
    prompt_ids: list[int],
    reference: list[int],
    other: list[int],
    pad: int,
    eos: Any = None,
) -> dict[str, Any] | None:
    """Where ``other`` first leaves greedy's ``reference`` output, and whether it was a tie.

    Greedy's logits at that step are recomputed by re-running ``generate`` (deterministic, same
    dtype) with ``output_logits``. ``gap`` = logit of greedy's token - logit of the other token;
    a **tie** is a gap within one rounding step of the model's dtype at greedy's logit (a
    multi-token forward reduces in another order, so such a choice can flip). None if identical.
    """
    n = min(len(reference), len(other))
    i = next((j for j in range(n) if reference[j] != other[j]), None)
    if i is None:
        if len(reference) == len(other):
            return None
        return {"position": n, "gap": None, "tie": False, "note": "one output is a prefix of the other"}
    x = torch.tensor([prompt_ids], device=base.device)
    with torch.no_grad():
        res = base.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=False,
            max_new_tokens=i + 1,
            eos_token_id=eos,
            pad_token_id=pad,
            output_logits=True,
            return_dict_in_generate=True,
        )
    logits = res.logits[i][0]
    g, b = reference[i], other[i]
    top = float(logits[g])
    gap = top - float(logits[b])
    # HF hands logits back in fp32 whatever the model computes in: round in the model's dtype
    step = rounding_step(top, getattr(base, "dtype", logits.dtype))
    return {
        "position": i,
        "greedy_token": g,
        "other_token": b,
        "greedy_logit": top,
        "gap": gap,
        "rounding_step": step,
        "tie": bool(gap <= step),
        "rerun_matches": res.sequences[0, len(prompt_ids) :].tolist()[: i + 1] == reference[: i + 1],
    }


def divergence_report(
    base: Any, runs: dict[str, list[dict[str, Any]]], prompt_ids: dict[str, list[int]], pad: int, eos: Any
) -> dict[str, Any]:
    """Per method (not greedy): identical rate, identical-up-to-ties rate, and every divergence."""
    out: dict[str, Any] = {}
    ref = {r["id"]: r["output_ids"] for r in runs["greedy"]}
    for name, rows in runs.items():
        if name == "greedy":
            continue
        divs = []
        for r in rows:
            d = first_divergence(base, prompt_ids[r["id"]], ref[r["id"]], r["output_ids"], pad, eos)
            if d is not None:
                divs.append({"id": r["id"]} | d)
        n = max(1, len(rows))
        out[name] = {
            "runs": len(rows),
            "identical": (len(rows) - len(divs)) / n,
            "identical_or_tie": (len(rows) - sum(not d["tie"] for d in divs)) / n,
            "ties": sum(d["tie"] for d in divs),
            "divergences": divs,
        }
    return out


def render_divergence(div: dict[str, Any], dtype: str) -> str:
    lines = [
        f"### Equality with greedy ({dtype})",
        "",
        "A *tie*: at the first divergence, greedy's logit for its own token exceeds the other token's "
        "by at most one rounding step of the dtype.",
        "",
        "| method | runs | identical | identical up to ties | first divergences (position: gap) |",
        "|---|---|---|---|---|",
    ]
    for name, d in div.items():
        where = ", ".join(
            f"{x['position']}: {x['gap']:.3g}{' tie' if x['tie'] else ''}"
            if x.get("gap") is not None
            else f"{x['position']}: -"
            for x in d["divergences"][:12]
        )
        lines.append(
            f"| {name} | {d['runs']} | {100 * d['identical']:.0f}% | {100 * d['identical_or_tie']:.0f}% | {where or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _decoders(model: BiTAModel, trees: list[str], calibration: Any) -> dict[str, BiTADecoder]:
    """One decoder per tree spec (``<tree>`` or ``<tree>+pld:L``), keyed by its method name."""
    decoders = {}
    for spec in trees:
        tree_text, lookup = split_method(spec)
        tree = TreeSpec.parse(tree_text, model.num_masks, calibration)
        dec = BiTADecoder(model, tree, lookup_tokens=lookup)
        decoders[f"bita[{dec.label()}]"] = dec
    return decoders


@dataclass
class _Methods:
    """The methods ``speed_runs`` times, and their per-question records so far.

    ``end``: the ids that end an answer (core's ``end_token_ids``); every method stops at them and
    outputs are cut after the first one, so like is compared with like.
    """

    base: Any
    decoders: dict[str, BiTADecoder]
    max_new_tokens: int
    pld_tokens: int | None
    end: set[int]
    pad: int
    runs: dict[str, list[dict[str, Any]]] = field(init=False)  # method -> one record per prompt

    def __post_init__(self) -> None:
        self.runs = {"greedy": []} | ({"pld": []} if self.pld_tokens else {})
        self.runs |= {name: [] for name in self.decoders}

    @property
    def eos(self) -> list[int] | None:
        """The end ids as ``generate`` takes them (None: the generation config's own)."""
        return sorted(self.end) or None

    def warm_up(self, prompts: list[list[int]]) -> None:
        """Untimed short runs: first calls pay one-off costs (allocations, kernels)."""
        for ids in prompts:
            _hf_generate(self.base, ids, 8, self.eos, self.pad)
            for dec in self.decoders.values():
                dec.generate(ids, 8, self.eos)

    def _hf(self, row: dict[str, Any], ids: list[int], **extra: Any) -> dict[str, Any]:
        out, sec, fwd = _hf_generate(self.base, ids, self.max_new_tokens, self.eos, self.pad, **extra)
        out = until_end(out, self.end)  # HF pads nothing at batch size 1; cut as BiTA stops
        return row | {"new_tokens": len(out), "seconds": sec, "forwards": fwd, "output_ids": out}

    def run_all(self, row: dict[str, Any], ids: list[int]) -> None:
        """Every method on one prompt (interleaved, so machine load hits all alike)."""
        runs = self.runs
        runs["greedy"].append(self._hf(row, ids))
        if self.pld_tokens:
            runs["pld"].append(self._hf(row, ids, prompt_lookup_num_tokens=self.pld_tokens))
        for name, dec in self.decoders.items():
            res = dec.generate(ids, self.max_new_tokens, self.eos)
            counts = {"new_tokens": len(res.tokens), "seconds": res.seconds, "forwards": res.forwards}
            runs[name].append(row | counts | {"accept_lengths": res.accepted, "output_ids": res.tokens})
        others = ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in runs.items() if k != "greedy")
        log.info(
            "%s (%s): greedy %.2fs, %s", row["id"], row["category"], runs["greedy"][-1]["seconds"], others
        )


def _run_question(
    methods: _Methods,
    tokenizer: Any,
    prompt: dict[str, Any],
    ids: list[int],
    prompt_ids: dict[str, list[int]],
) -> None:
    """The first turn, then each later turn after greedy's answer to the turns before it."""
    prompt_ids[prompt["id"]] = ids
    methods.run_all({"id": prompt["id"], "category": prompt["category"]}, ids)
    users, answers = list(prompt.get("turn_texts", [])), []
    for turn, followup in enumerate(prompt.get("followups", []), start=2):
        answer_ids = [t for t in methods.runs["greedy"][-1]["output_ids"] if t not in methods.end]
        answers.append(tokenizer.decode(answer_ids, skip_special_tokens=True))
        users.append(followup)
        text = format_conversation(prompt["template"], users, answers, tokenizer=tokenizer)
        rid = f"{prompt['id']}-turn{turn}"
        prompt_ids[rid] = encode_prompt(tokenizer, text)
        methods.run_all({"id": rid, "category": prompt["category"]}, prompt_ids[rid])


def speed_runs(
    model: BiTAModel,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    *,
    max_new_tokens: int = 128,
    trees: list[str] | None = None,
    pld_tokens: int | None = 10,
    warmup: int = 1,
    calibration: Any = None,
    divergence: dict[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per-method, per-question records for ``speed_report`` (see the module docstring).
    ``calibration``: the adapter's ``Calibration``, for ``auto:N`` trees. ``divergence``: a dict
    to fill with ``divergence_report`` (first divergence from greedy and ties, untimed)."""
    base = model.base
    methods = _Methods(
        base,
        _decoders(model, trees or ["tri:5"], calibration),
        max_new_tokens=max_new_tokens,
        pld_tokens=pld_tokens,
        end=end_token_ids(base.generation_config, tokenizer),
        pad=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
    )
    encoded = [(p, encode_prompt(tokenizer, p["prompt"])) for p in prompts]
    methods.warm_up([ids for _, ids in encoded[: max(0, warmup)]])
    prompt_ids: dict[str, list[int]] = {}
    for n, (p, ids) in enumerate(encoded, start=1):
        log.info("question %d/%d", n, len(encoded))
        _run_question(methods, tokenizer, p, ids, prompt_ids)
    if divergence is not None:
        divergence.update(divergence_report(base, methods.runs, prompt_ids, methods.pad, methods.eos))
    return methods.runs


def evaluate_speed(
    model: BiTAModel,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    output_dir: str | Path,
    *,
    max_new_tokens: int = 128,
    trees: list[str] | None = None,
    pld_tokens: int | None = 10,
    warmup: int = 1,
    title: str = "BiTA decoding speed",
    calibration: Any = None,
) -> dict[str, Any]:
    """Run ``speed_runs`` and write ``speed.json`` / ``speed.md`` + the raw runs into ``output_dir``."""
    from leanlm.core.evaluation.speed import speed_report, write_report
    from leanlm.core.records import write_json

    div: dict[str, Any] = {}
    runs = speed_runs(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        trees=trees,
        pld_tokens=pld_tokens,
        warmup=warmup,
        calibration=calibration,
        divergence=div,
    )
    report = speed_report(runs, baseline="greedy")
    report["equality"] = div
    report["settings"] = {
        "max_new_tokens": max_new_tokens,
        "questions": len(prompts),
        "turns": 1 + max((len(p.get("followups", [])) for p in prompts), default=0),
        "trees": trees or ["tri:5"],
        "pld_tokens": pld_tokens,
        "baseline": "HF generate, greedy, KV cache, batch size 1",
        "device": str(model.device),
        "dtype": str(model.dtype),
        "threads": torch.get_num_threads(),
    }
    out = Path(output_dir)
    write_json(out / "runs.json", runs)
    _, md = write_report(out / "speed", report, title=title)
    md.write_text(md.read_text() + "\n" + render_divergence(div, str(model.dtype)))
    return report


def answer_prompts(
    model: BiTAModel,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    output: str | Path,
    *,
    max_new_tokens: int = 256,
    tree: str | None = None,
    calibration: Any = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """BiTA answers, appended to ``output`` (resumable JSONL keyed by id); greedy unless
    ``temperature`` > 0 (then speculative sampling, the base model's distribution)."""
    from leanlm.core.records import ResumableJsonlWriter

    tree_text, lookup = split_method(tree) if tree is not None else (None, 0)
    decoder = BiTADecoder(
        model,
        tree_text,
        calibration=calibration,
        lookup_tokens=lookup,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    end = end_token_ids(model.base.generation_config, tokenizer)
    with ResumableJsonlWriter(output) as writer:
        for p in prompts:
            if p["id"] in writer:
                continue
            ids = encode_prompt(tokenizer, p["prompt"])
            res = decoder.generate(ids, max_new_tokens, sorted(end))
            text_ids = [t for t in res.tokens if t not in end]
            writer.write(
                {
                    "id": p["id"],
                    "prompt": p["prompt"],
                    "output": tokenizer.decode(text_ids, skip_special_tokens=True),
                    "new_tokens": len(res.tokens),
                    "forwards": res.forwards,
                    "mean_accepted": round(res.mean_accepted, 4),
                    "seconds": round(res.seconds, 4),
                }
            )
        return [writer.done[p["id"]] for p in prompts]


def calibrate_adapter(
    model: BiTAModel,
    tokenizer: Any,
    prompts: list[dict[str, Any]],
    adapter: str | Path,
    *,
    max_new_tokens: int = 128,
    max_rank: int = 10,
) -> dict[str, Any]:
    """Collect per-(mask, rank) acceptance on ``prompts`` (held-in: not the evaluated questions)
    and save ``calibration.json`` beside the adapter; returns a summary."""
    from leanlm.bita.calibration import collect_calibration, summary

    end = end_token_ids(model.base.generation_config, tokenizer)
    ids = [encode_prompt(tokenizer, p["prompt"]) for p in prompts]
    cal = collect_calibration(
        model, ids, max_new_tokens=max_new_tokens, eos_token_id=sorted(end), max_rank=max_rank
    )
    path = cal.save(adapter)
    return {"calibration": str(path)} | summary(cal)
