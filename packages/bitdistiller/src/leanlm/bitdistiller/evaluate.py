"""Evaluation of (fake- or really-) quantized models through ``leanlm.core.evaluation``.

* perplexity: GPTQ style on a held-out split of the offline text (or any text dataset/file)
* lm-eval: MMLU 5-shot, PIQA, HellaSwag, Winogrande, ARC-c 0-shot on local offline tasks
* HumanEval pass@1 (greedy, the original's Alpaca "Create a Python script" prompt, code block extracted)
* GSM8K accuracy (MetaMath prompt "... Let's think step by step.", answer extraction from core)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leanlm.bitdistiller.data import _alpaca
from leanlm.core.errors import UserError

DEFAULT_TASKS = ("mmlu", "piqa", "hellaswag", "winogrande", "arc_challenge")


def ppl(model: Any, tokenizer: Any, dataset: str = "text", split: str | None = "test", seqlen: int = 2048,
        max_chunks: int | None = None, batch_size: int = 1) -> dict[str, Any]:  # fmt: skip
    """Perplexity; with ``split`` ("test"/"calib") the fixed held-out split of a text dataset is used."""
    from leanlm.core.evaluation import heldout_texts, perplexity

    source: Any = heldout_texts(dataset, split) if split else dataset
    return perplexity(model, tokenizer, source, seqlen=seqlen, max_chunks=max_chunks, batch_size=batch_size)


def lm_eval_tasks(model: Any, tokenizer: Any, tasks: str | tuple | list = DEFAULT_TASKS, num_fewshot: int | None = None,
                  limit: int | None = None, batch_size: int = 1) -> dict[str, Any]:  # fmt: skip
    from leanlm.core.evaluation import run_lm_eval

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    results = run_lm_eval(
        model, tokenizer, names, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size
    )
    accs = [v.get("acc") for v in results.values() if v.get("acc") is not None]
    return {"tasks": results, "avg_acc": sum(accs) / len(accs) if accs else None}


def humaneval_prompt(prompt: str) -> str:
    tabbed = prompt.replace("    ", "\t")
    return _alpaca(f"Create a Python script for this problem:\n{tabbed}")


_CODE_BLOCK = re.compile(r"```(?:python)?\n(.*?)(?:```|$)", re.S)


def extract_code(text: str) -> str:
    """The first fenced code block (or the whole text), cut before an ``if __name__ == "__main__":``."""
    m = _CODE_BLOCK.search(text)
    code = m.group(1) if m else text
    return code.split('if __name__ == "__main__":')[0].split("if __name__ == '__main__':")[0]


def _generate(model: Any, tokenizer: Any, requests: list[dict], output: str | Path | None, max_new_tokens: int,
              temperature: float, batch_size: int, seed: int, desc: str) -> list[Any]:  # fmt: skip
    from leanlm.core.generation import SamplingParams, generate, get_backend

    backend = get_backend("hf", model=model, tokenizer=tokenizer, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return generate(requests, backend, params, output=output, desc=desc)


def humaneval(model: Any, tokenizer: Any, limit: int | None = None, max_new_tokens: int = 512, batch_size: int = 8,
              output: str | Path | None = None, timeout: float = 3.0) -> dict[str, Any]:  # fmt: skip
    from leanlm.core.datasets import load_records
    from leanlm.core.evaluation import humaneval_pass_at_1

    problems = load_records("humaneval", limit=limit)
    reqs = [{"id": p["id"], "prompt": humaneval_prompt(p["prompt"])} for p in problems]
    results = _generate(model, tokenizer, reqs, output, max_new_tokens, 0.0, batch_size, 0, "humaneval")
    completions = {r.id: extract_code(r.text) for r in results if r.ok}
    if not completions:
        raise UserError("no HumanEval completions were generated")
    score = humaneval_pass_at_1(completions, problems, timeout=timeout)
    return {"pass@1": score["pass@1"], "n_problems": score["n_problems"]}


def gsm8k(model: Any, tokenizer: Any, limit: int | None = None, max_new_tokens: int = 512, temperature: float = 0.0,
          batch_size: int = 8, output: str | Path | None = None, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    from leanlm.core.datasets import load_records
    from leanlm.core.evaluation import gsm8k_accuracy

    records = load_records("gsm8k", limit=limit)
    reqs = [{"id": r["id"], "prompt": _alpaca(r["question"], " Let's think step by step.")} for r in records]
    results = _generate(
        model, tokenizer, reqs, output, max_new_tokens, temperature, batch_size, seed, "gsm8k"
    )
    score = gsm8k_accuracy({r.id: r.text for r in results if r.ok}, records)
    return {k: score[k] for k in ("accuracy", "correct", "total", "missing")}
