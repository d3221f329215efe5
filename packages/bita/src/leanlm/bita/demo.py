"""``leanlm demo bita``: the whole BiTA pipeline at toy scale on CPU (a few minutes).

prompts (offline instructions, chat template) -> the model's greedy answers (core generation,
hf backend) -> a small adapter trained for a few steps -> greedy vs prompt lookup vs BiTA on
held-out instructions, with the token-identity check.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from leanlm.core.demo import DemoResult


def _train_toy_adapter(
    base: Any, tok: Any, records: list[dict[str, Any]], template: str, model: str, out_dir: Path
) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """Self-distilled data (the model's greedy answers to ``records``) and a small adapter trained
    on it for 12 steps; returns (the adapter, the training records, ``train_adapter``'s summary)."""
    from leanlm.bita.model import BiTAConfig, BiTAModel
    from leanlm.bita.prompts import generate_outputs, make_prompts, training_records
    from leanlm.bita.train import train_adapter
    from leanlm.core.generation import get_backend
    from leanlm.core.records import read_jsonl, write_jsonl

    prompts = make_prompts(records, tok, template, "short")
    write_jsonl(out_dir / "prompts.jsonl", prompts)
    backend = get_backend("hf", model=base, tokenizer=tok, batch_size=6)
    generate_outputs(prompts, out_dir / "data.jsonl", backend, max_new_tokens=48)
    data = training_records(read_jsonl(out_dir / "data.jsonl"))
    bita = BiTAModel(base, BiTAConfig(num_masks=3, num_prefix=8, base_model=model))
    summary = train_adapter(
        bita,
        tok,
        data,
        out_dir / "adapter",
        max_groups=16,
        cutoff=256,
        resample=2,
        max_steps=12,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=3e-2,
        logging_steps=4,
        save_steps=10_000,
    )
    return bita, data, summary


def _summary_lines(data: list[dict[str, Any]], summary: dict[str, Any], o: dict, p: dict) -> str:
    """The demo's report: training, then BiTA's (``o``) and prompt lookup's (``p``) overall figures."""
    losses = summary["losses"]
    return "\n".join(
        [
            f"- data: {len(data)} self-distilled answers; adapter trained {summary['steps']} steps "
            f"(loss {losses[0]:.2f} -> {losses[-1]:.2f})"
            if losses
            else "",
            f"- BiTA (tree 1-1-1) on {o['n']} held-out prompts: {o['speedup']:.2f}x vs greedy with KV cache, "
            f"{o['mean_accepted']:.2f} tokens per forward, outputs identical to greedy: {100 * o['equal_outputs']:.0f}%",
            f"- prompt lookup: {p['speedup']:.2f}x, {p['mean_accepted']:.2f} tokens per forward",
            "- toy scale: a 12-step adapter drafts poorly; see packages/bita/README.md for the benchmark",
        ]
    )


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    from leanlm.bita.evaluate import evaluate_speed
    from leanlm.bita.prompts import make_prompts
    from leanlm.core.datasets import load_records
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.templates import default_template_for

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = load_tokenizer(model)
    base = load_model(model, device="cpu")
    template = default_template_for(model)
    records = load_records("instructions", limit=16, seed=1)
    train_part, held_out = records[:12], records[12:]
    bita, data, summary = _train_toy_adapter(base, tok, train_part, template, model, out_dir)
    questions = [
        {"id": p["id"], "category": "held-out", "prompt": p["prompt"]}
        for p in make_prompts(held_out, tok, template, "short")
    ]
    report = evaluate_speed(
        bita,
        tok,
        questions,
        out_dir / "eval",
        max_new_tokens=32,
        trees=["1-1-1"],
        pld_tokens=10,
        title="BiTA demo (toy scale)",
    )
    o = report["methods"]["bita[1-1-1]"]["overall"]
    p = report["methods"]["pld"]["overall"]
    return DemoResult(
        "bita",
        ok=o["equal_outputs"] == 1.0,
        seconds=time.time() - t0,
        summary=_summary_lines(data, summary, o, p),
        metrics={
            "speedup": o["speedup"],
            "mean_accepted": o["mean_accepted"],
            "equal_outputs": o["equal_outputs"],
            "pld_speedup": p["speedup"],
            "train_steps": summary["steps"],
        },
    )
