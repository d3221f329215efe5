"""Console scripts (thin fire wrappers): bita-gen-prompts, bita-gen-outputs, bita-train, bita-eval,
bita-generate. Every one takes ``--help``; user mistakes print one line and exit with code 2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.bita.train import train
from leanlm.core.console import entry
from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.bita")


def _template(template: str | None, model: str) -> str:
    from leanlm.core.templates import default_template_for, get_template

    name = template or default_template_for(str(model))
    get_template(name)
    return name


def _limit(value: Any, what: str = "limit") -> int | None:
    if value is None:
        return None
    if int(value) < 1:
        raise UserError(f"--{what} must be a positive integer, got {value}")
    return int(value)


def gen_prompts(
    data: str = "instructions",
    output: str = "bita_prompts.jsonl",
    model: str = "default",
    template: str | None = None,
    style: str = "full",
    limit: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Instructions (a core dataset name or a JSON/JSONL file) -> prompts in MODEL's template.

    style: full (the template's system prompt) | short (none) | both. template: alpaca,
    llama2_chat, vicuna_v1.1, falcon, chat, ... (default: chosen from the model name).
    """
    from leanlm.bita.prompts import STYLES, make_prompts
    from leanlm.core.datasets import load_records
    from leanlm.core.models import load_tokenizer
    from leanlm.core.records import write_jsonl

    styles = list(STYLES) if style == "both" else [style]
    name = _template(template, model)
    records = load_records(data, limit=_limit(limit), seed=seed)
    if not records:
        raise UserError(f"{data}: no instructions")
    tokenizer = load_tokenizer(model) if name == "chat" else None
    prompts = [p for s in styles for p in make_prompts(records, tokenizer, name, s)]
    write_jsonl(output, prompts)
    log.info("wrote %d prompts to %s", len(prompts), output)
    return {"prompts": len(prompts), "output": output, "template": name}


def gen_outputs(
    prompts: str,
    output: str = "bita_data.jsonl",
    model: str = "default",
    backend: str = "hf",
    base_url: str | None = None,
    api_key: str | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    concurrency: int = 8,
    limit: int | None = None,
    dtype: str | None = None,
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """The base model's greedy answers to PROMPTS, into ONE resumable JSONL (re-run to resume).

    backend: hf (in process; --model) | tgi (--base_url host:port) | openai (any OpenAI-compatible
    server, e.g. leanlm serve; --base_url, --api_key, --model = served name) | vllm (in process, if
    installed) | a registered backend (e.g. dllm: --model DLLM_DIR).
    Requests still failing after the retries end the run with exit 2 (re-run to retry only them)
    unless --max_failed_fraction allows that share; failed ones are never used as answers.
    """
    from leanlm.bita.prompts import generate_outputs
    from leanlm.core.generation.spec import BackendSpec
    from leanlm.core.records import read_records

    records = read_records(prompts)
    if not records:
        raise UserError(f"{prompts}: no prompts")
    if limit:
        records = records[: _limit(limit)]
    served = str(backend).lower() == "openai" and model == "default"  # ask the server its model
    spec = BackendSpec.from_flags(backend=backend, model=None if served else model, base_url=base_url,
                                  api_key=api_key, concurrency=concurrency, batch_size=batch_size, dtype=dtype)  # fmt: skip
    engine = spec.build()
    results = generate_outputs(
        records, output, engine, max_new_tokens=int(max_new_tokens), max_failed_fraction=max_failed_fraction
    )
    failed = sum(not r.ok for r in results)
    return {
        "answers": len(results) - failed,
        "failed": failed,
        "output": output,
        "stats": engine.stats.as_dict(),
    }


def _load(adapter: str | None, model: str, dtype: str | None, num_masks: int = 3) -> Any:
    from leanlm.bita.model import BiTAConfig, BiTAModel, load_bita
    from leanlm.core.models import load_model

    if adapter:
        bita = (
            load_bita(adapter, dtype=dtype)
            if model == "default"
            else load_bita(adapter, load_model(model, dtype=dtype))
        )
        return bita, bita.config.base_model if model == "default" else model
    log.warning("no --adapter: using an UNTRAINED adapter (output stays identical, acceptance is low)")
    return BiTAModel(
        load_model(model, dtype=dtype), BiTAConfig(num_masks=num_masks, base_model=model)
    ).eval(), model


def _tree_text(tree: Any) -> str:
    """fire reads ``--tree 1,1`` as the tuple (1, 1), ``--tree 1,`` as (1,) and ``--tree 5`` as an
    int: back to the text that was typed, so that the tree parser can reject the comma forms."""
    if isinstance(tree, (tuple, list)):
        return ",".join(str(w) for w in tree) + ("," if len(tree) == 1 else "")
    return str(tree)


def evaluate(
    data: str,
    adapter: str | None = None,
    model: str = "default",
    output_dir: str = "bita_eval",
    template: str | None = None,
    max_new_tokens: int = 128,
    limit: int | None = None,
    per_category: int | None = None,
    tree: str = "tri:5",
    pld_tokens: int = 10,
    dtype: str | None = None,
    warmup: int = 1,
    turns: int = 1,
    calibrate: bool = False,
    calibration_ranks: int = 10,
) -> dict[str, Any]:
    """Speed of BiTA vs greedy (HF generate WITH KV cache) and prompt-lookup decoding on DATA.

    DATA: a Spec-Bench / MT-Bench question file, a bita-gen-prompts file, humaneval, or any core
    dataset. turns: how many turns of multi-turn questions to run (2 adds MT-Bench's second turn,
    after greedy's first answer, as rows <id>-turn2). tree: candidates per level separated by '-'
    ('1' = one level with one candidate, '1-1' = a chain of two, '3-2-1'), 'tri:K' (the paper's
    upper triangle, K, K-1, ... over all M levels) or 'auto:N' (N nodes chosen from the adapter's
    calibration); '<tree>+pld:L' adds a prompt-lookup branch of L tokens (hybrid drafts); several
    shapes separated by ';' are timed side by side, e.g. --tree "1;1-1;tri:5;1+pld:3".
    Commas are refused (ambiguous). pld_tokens 0 skips prompt lookup. Writes speed.json, speed.md
    and runs.json to OUTPUT_DIR.

    --calibrate: instead of timing, decode DATA (held-in prompts, e.g. training prompts; not the
    evaluated questions) and save per-(mask, rank) acceptance (top --calibration_ranks) as
    calibration.json beside the adapter, which --tree auto:N then uses.
    """
    from leanlm.bita.calibration import load_calibration
    from leanlm.bita.evaluate import calibrate_adapter, evaluate_speed, load_eval_prompts
    from leanlm.core.models import load_tokenizer

    if calibrate and not adapter:
        raise UserError("--calibrate needs --adapter (the statistics are saved beside it)")
    if not 1 <= int(calibration_ranks) <= 64:
        raise UserError(f"--calibration_ranks must be between 1 and 64, got {calibration_ranks}")
    bita, base_name = _load(adapter, model, dtype)
    tokenizer = load_tokenizer(base_name)
    trees = [t.strip() for t in _tree_text(tree).split(";") if t.strip()]
    prompts = load_eval_prompts(
        data,
        tokenizer,
        _template(template, base_name),
        _limit(limit),
        _limit(per_category, "per_category"),
        turns=int(turns),
    )
    if calibrate:
        return calibrate_adapter(
            bita,
            tokenizer,
            prompts,
            adapter,
            max_new_tokens=int(max_new_tokens),
            max_rank=int(calibration_ranks),
        )
    report = evaluate_speed(
        bita,
        tokenizer,
        prompts,
        output_dir,
        max_new_tokens=int(max_new_tokens),
        trees=trees,
        pld_tokens=int(pld_tokens),
        warmup=int(warmup),
        calibration=load_calibration(adapter),
    )
    from leanlm.core.evaluation.speed import render_markdown

    print(render_markdown(report, "BiTA decoding speed"))
    return {m: r["overall"] for m, r in report["methods"].items()} | {"output_dir": output_dir}


def generate(
    prompts: str | None = None,
    prompt: str | None = None,
    adapter: str | None = None,
    model: str = "default",
    output: str = "bita_answers.jsonl",
    template: str | None = None,
    max_new_tokens: int = 256,
    tree: str = "tri:5",
    limit: int | None = None,
    dtype: str | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> Any:
    """Answer PROMPTS (a file like bita-eval's DATA) or one --prompt with BiTA decoding.

    Writes a resumable JSONL (id, prompt, output, new_tokens, forwards, mean_accepted, seconds);
    with --prompt prints the answer instead. tree: as in bita-eval, e.g. --tree 1 (one level, one
    candidate), --tree 1-1 (a chain of two), --tree 3-2-1, --tree tri:5, --tree auto:12, --tree
    1+pld:3 (plus a prompt-lookup branch). --temperature > 0 samples (nucleus --top_p, --seed) with
    the speculative acceptance rule: the output follows the base model's sampling distribution.
    """
    from leanlm.bita.calibration import load_calibration
    from leanlm.bita.evaluate import answer_prompts, load_eval_prompts
    from leanlm.core.models import load_tokenizer
    from leanlm.core.templates import format_prompt

    if (prompts is None) == (prompt is None):
        raise UserError("give exactly one of --prompts FILE or --prompt TEXT")
    if float(temperature) < 0 or not 0.0 < float(top_p) <= 1.0:
        raise UserError(f"need --temperature >= 0 and 0 < --top_p <= 1, got {temperature} and {top_p}")
    sampling = {"temperature": float(temperature), "top_p": float(top_p), "seed": int(seed)}
    bita, base_name = _load(adapter, model, dtype)
    tokenizer = load_tokenizer(base_name)
    name = _template(template, base_name)
    if prompt is not None:
        if not str(prompt).strip():
            raise UserError("--prompt is empty")
        items = [
            {
                "id": "prompt",
                "category": "prompt",
                "prompt": format_prompt(name, str(prompt), tokenizer=tokenizer),
            }
        ]
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            rows = answer_prompts(
                bita,
                tokenizer,
                items,
                Path(tmp) / "a.jsonl",
                max_new_tokens=int(max_new_tokens),
                tree=_tree_text(tree),
                calibration=load_calibration(adapter),
                **sampling,
            )
        return rows[0]["output"]
    items = load_eval_prompts(prompts, tokenizer, name, _limit(limit))
    rows = answer_prompts(
        bita,
        tokenizer,
        items,
        output,
        max_new_tokens=int(max_new_tokens),
        tree=_tree_text(tree),
        calibration=load_calibration(adapter),
        **sampling,
    )
    return {"answers": len(rows), "output": output}


gen_prompts_main = entry(gen_prompts, "bita-gen-prompts")
gen_outputs_main = entry(gen_outputs, "bita-gen-outputs")
train_main = entry(train, "bita-train")
eval_main = entry(evaluate, "bita-eval")
generate_main = entry(generate, "bita-generate")
