"""Evaluation of (fake- or really-) quantized models through ``leanlm.core.evaluation``.

* perplexity: GPTQ style on a held-out split of the offline text (or any text dataset/file)
* lm-eval: MMLU 5-shot, PIQA, HellaSwag, Winogrande, ARC-c 0-shot on local offline tasks
* HumanEval pass@1 (greedy, the original's Alpaca "Create a Python script" prompt, code block extracted)
* GSM8K accuracy (MetaMath prompt "... Let's think step by step.", answer extraction from core)

The prompts are ``leanlm.bitdistiller.prompts``'s, the same the teacher data uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leanlm.bitdistiller.prompts import code_prompt, math_prompt
from leanlm.core.errors import UserError

DEFAULT_TASKS = ("mmlu", "piqa", "hellaswag", "winogrande", "arc_challenge")


def ppl(
    model: Any,
    tokenizer: Any,
    dataset: str = "text",
    split: str | None = "test",
    seqlen: int = 2048,
    max_chunks: int | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """Perplexity; with ``split`` ("test"/"calib") the fixed held-out split of a text dataset is used."""
    from leanlm.core.evaluation import heldout_texts, perplexity

    source: Any = heldout_texts(dataset, split) if split else dataset
    return perplexity(model, tokenizer, source, seqlen=seqlen, max_chunks=max_chunks, batch_size=batch_size)


def lm_eval_tasks(
    model: Any,
    tokenizer: Any,
    tasks: str | tuple | list = DEFAULT_TASKS,
    num_fewshot: int | None = None,
    limit: int | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """lm-eval accuracy per task (``tasks`` comma-separated or a list) and their mean ``avg_acc``."""
    from leanlm.core.evaluation import run_lm_eval

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    results = run_lm_eval(
        model, tokenizer, names, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size
    )
    accs = [v.get("acc") for v in results.values() if v.get("acc") is not None]
    return {"tasks": results, "avg_acc": sum(accs) / len(accs) if accs else None}


_CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)(?:```|$)", re.S)


def extract_code(text: str) -> str:
    """The first fenced code block (or the whole text), cut before an ``if __name__ == "__main__":``."""
    m = _CODE_BLOCK.search(text)
    code = m.group(1) if m else text
    return code.split('if __name__ == "__main__":')[0].split("if __name__ == '__main__':")[0]


def _generate(
    model: Any,
    tokenizer: Any,
    requests: list[dict],
    params: Any,
    batch_size: int,
    output: str | Path | None,
    desc: str,
) -> list[Any]:
    """The in-process hf backend answers ``requests`` with ``params`` (SamplingParams), resumably to ``output``."""
    from leanlm.core.generation import generate, get_backend

    backend = get_backend("hf", model=model, tokenizer=tokenizer, batch_size=batch_size)
    return generate(requests, backend, params, output=output, desc=desc)


def humaneval_requests(problems: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One generation request per HumanEval problem: its ``prompt`` field verbatim in ``code_prompt``."""
    return [{"id": p["id"], "prompt": code_prompt(p["prompt"])} for p in problems]


def humaneval(
    model: Any,
    tokenizer: Any,
    limit: int | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    output: str | Path | None = None,
    timeout: float = 3.0,
) -> dict[str, Any]:
    """Greedy pass@1 of the code blocks the model writes (executed in core's sandbox)."""
    from leanlm.core.datasets import load_records
    from leanlm.core.evaluation import humaneval_pass_at_1
    from leanlm.core.generation import SamplingParams

    problems = load_records("humaneval", limit=limit)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    results = _generate(
        model, tokenizer, humaneval_requests(problems), params, batch_size, output, "humaneval"
    )
    completions = {r.id: extract_code(r.text) for r in results if r.ok}
    if not completions:
        raise UserError("no HumanEval completions were generated")
    score = humaneval_pass_at_1(completions, problems, timeout=timeout)
    return {"pass@1": score["pass@1"], "n_problems": score["n_problems"]}


def gsm8k(
    model: Any,
    tokenizer: Any,
    limit: int | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    batch_size: int = 8,
    output: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """GSM8K accuracy of the answers to ``math_prompt`` (final number extracted by core)."""
    from leanlm.core.datasets import load_records
    from leanlm.core.evaluation import gsm8k_accuracy
    from leanlm.core.generation import SamplingParams

    records = load_records("gsm8k", limit=limit)
    requests = [{"id": r["id"], "prompt": math_prompt(r["question"])} for r in records]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    results = _generate(model, tokenizer, requests, params, batch_size, output, "gsm8k")
    score = gsm8k_accuracy({r.id: r.text for r in results if r.ok}, records)
    return {k: score[k] for k in ("accuracy", "correct", "total", "missing")}
