"""What bita-gen-prompts, bita-gen-outputs, bita-eval and bita-generate do, on typed values.

Each ``run_*`` function takes its command's flags as one dataclass from ``options.py``: ``cli.py``
makes the console script with ``leanlm.core.config_cli.config_command`` (which types every value from
the command line), so a command's parameter list exists once. bita-train's ``run_train`` lives in
``train.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.bita.options import EvalOptions, GenerateOptions, GenOutputsOptions, GenPromptsOptions
from leanlm.core.config_cli import fields_for
from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.bita")


def _template(template: str | None, model: str) -> str:
    """The prompt template: ``template`` (checked), else the one chosen for ``model``."""
    from leanlm.core.templates import default_template_for, get_template

    name = template or default_template_for(str(model))
    get_template(name)
    return name


def _limit(value: int | None, what: str = "limit") -> int | None:
    if value is not None and value < 1:
        raise UserError(f"--{what} must be a positive integer, got {value}")
    return value


def tree_text(tree: Any) -> str:
    """fire reads ``--tree 1,1`` as (1, 1), ``--tree 1,`` as (1,) and ``--tree 5`` as an int: back
    to the text that was typed, so that the tree parser can reject the comma forms."""
    if isinstance(tree, (tuple, list)):
        return ",".join(str(w) for w in tree) + ("," if len(tree) == 1 else "")
    return str(tree)


def load_for_decoding(
    adapter: str | None, model: str, dtype: str | None, num_masks: int = 3
) -> tuple[Any, str]:
    """(the BiTA model, the base model's name): ``adapter`` on its own base (``model`` "default")
    or on ``model``; without an adapter an untrained one on ``model``."""
    from leanlm.bita.model import BiTAConfig, BiTAModel, load_bita
    from leanlm.core.models import load_model

    if adapter:
        if model == "default":
            bita = load_bita(adapter, dtype=dtype)
            return bita, bita.config.base_model
        return load_bita(adapter, load_model(model, dtype=dtype)), model
    log.warning("no --adapter: using an UNTRAINED adapter (output stays identical, acceptance is low)")
    config = BiTAConfig(num_masks=num_masks, base_model=model)
    return BiTAModel(load_model(model, dtype=dtype), config).eval(), model


# ---------------------------------------------------------------------------- bita-gen-prompts


def run_gen_prompts(config: GenPromptsOptions) -> dict[str, Any]:
    """Instructions (a core dataset name or a JSON/JSONL file) -> prompts in MODEL's template.

    style: full (the template's system prompt) | short (none) | both. template: alpaca,
    llama2_chat, vicuna_v1.1, falcon, chat, ... (default: chosen from the model name).
    """
    from leanlm.bita.prompts import STYLES, make_prompts
    from leanlm.core.datasets import load_records
    from leanlm.core.models import load_tokenizer
    from leanlm.core.records import write_jsonl

    c = config
    styles = list(STYLES) if c.style == "both" else [c.style]
    name = _template(c.template, c.model)
    records = load_records(c.data, limit=_limit(c.limit), seed=c.seed)
    if not records:
        raise UserError(f"{c.data}: no instructions")
    tokenizer = load_tokenizer(c.model) if name == "chat" else None
    prompts = [p for s in styles for p in make_prompts(records, tokenizer, name, s)]
    write_jsonl(c.output, prompts)
    log.info("wrote %d prompts to %s", len(prompts), c.output)
    return {"prompts": len(prompts), "output": c.output, "template": name}


# ---------------------------------------------------------------------------- bita-gen-outputs


def run_gen_outputs(config: GenOutputsOptions) -> dict[str, Any]:
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

    c = config
    records = read_records(c.prompts)
    if not records:
        raise UserError(f"{c.prompts}: no prompts")
    if c.limit:
        records = records[: _limit(c.limit)]
    served = c.backend.lower() == "openai" and c.model == "default"  # ask the server its model
    # the flags that are BackendSpec fields (backend, model, base_url, api_key, batch_size, ...)
    spec_flags = fields_for(c, BackendSpec)
    engine = BackendSpec.from_flags(**(spec_flags | {"model": None if served else c.model})).build()
    results = generate_outputs(
        records, c.output, engine, max_new_tokens=c.max_new_tokens, max_failed_fraction=c.max_failed_fraction
    )
    failed = sum(not r.ok for r in results)
    return {
        "answers": len(results) - failed,
        "failed": failed,
        "output": c.output,
        "stats": engine.stats.as_dict(),
    }


# ---------------------------------------------------------------------------- bita-eval


def run_eval(config: EvalOptions) -> dict[str, Any]:
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
    from leanlm.core.evaluation.speed import render_markdown
    from leanlm.core.models import load_tokenizer

    c = config
    if c.calibrate and not c.adapter:
        raise UserError("--calibrate needs --adapter (the statistics are saved beside it)")
    if not 1 <= c.calibration_ranks <= 64:
        raise UserError(f"--calibration_ranks must be between 1 and 64, got {c.calibration_ranks}")
    bita, base_name = load_for_decoding(c.adapter, c.model, c.dtype)
    tokenizer = load_tokenizer(base_name)
    subset = {"limit": _limit(c.limit), "per_category": _limit(c.per_category, "per_category")}
    prompts = load_eval_prompts(c.data, tokenizer, _template(c.template, base_name), **subset, turns=c.turns)
    if c.calibrate:
        return calibrate_adapter(
            bita, tokenizer, prompts, c.adapter, max_new_tokens=c.max_new_tokens, max_rank=c.calibration_ranks
        )
    trees = [t.strip() for t in tree_text(c.tree).split(";") if t.strip()]
    report = evaluate_speed(
        bita,
        tokenizer,
        prompts,
        c.output_dir,
        max_new_tokens=c.max_new_tokens,
        trees=trees,
        pld_tokens=c.pld_tokens,
        warmup=c.warmup,
        calibration=load_calibration(c.adapter),
    )
    print(render_markdown(report, "BiTA decoding speed"))
    return {m: r["overall"] for m, r in report["methods"].items()} | {"output_dir": c.output_dir}


# ---------------------------------------------------------------------------- bita-generate


def run_generate(config: GenerateOptions) -> Any:
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

    c = config
    if (c.prompts is None) == (c.prompt is None):
        raise UserError("give exactly one of --prompts FILE or --prompt TEXT")
    if c.temperature < 0 or not 0.0 < c.top_p <= 1.0:
        raise UserError(f"need --temperature >= 0 and 0 < --top_p <= 1, got {c.temperature} and {c.top_p}")
    bita, base_name = load_for_decoding(c.adapter, c.model, c.dtype)
    tokenizer = load_tokenizer(base_name)
    template = _template(c.template, base_name)
    decoding = {
        "max_new_tokens": c.max_new_tokens,
        "tree": tree_text(c.tree),
        "calibration": load_calibration(c.adapter),
        "temperature": c.temperature,
        "top_p": c.top_p,
        "seed": c.seed,
    }
    if c.prompt is not None:
        return _answer_one(bita, tokenizer, template, c.prompt, decoding)
    items = load_eval_prompts(c.prompts, tokenizer, template, _limit(c.limit))
    rows = answer_prompts(bita, tokenizer, items, c.output, **decoding)
    return {"answers": len(rows), "output": c.output}


def _answer_one(bita: Any, tokenizer: Any, template: str, prompt: str, decoding: dict[str, Any]) -> str:
    """The answer to one prompt text (in ``template``), through a throwaway answers file."""
    import tempfile

    from leanlm.bita.evaluate import answer_prompts
    from leanlm.core.templates import format_prompt

    if not prompt.strip():
        raise UserError("--prompt is empty")
    item = {
        "id": "prompt",
        "category": "prompt",
        "prompt": format_prompt(template, prompt, tokenizer=tokenizer),
    }
    with tempfile.TemporaryDirectory() as tmp:
        rows = answer_prompts(bita, tokenizer, [item], Path(tmp) / "a.jsonl", **decoding)
    return rows[0]["output"]
