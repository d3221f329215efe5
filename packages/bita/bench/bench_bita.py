"""BiTA benchmark on CPU: self-distilled data -> adapter training -> Spec-Bench speed vs greedy and PLD.

    uv run python packages/bita/bench/bench_bita.py --out packages/bita/bench/out \
        --train-prompts 48 --gen-tokens 96 --steps 60 --per-category 2 --eval-tokens 64

1. prompts from ``load_records("instructions")`` (alpaca-style, disjoint from Spec-Bench) in the
   embedded model's chat template; greedy answers through ``leanlm.core.generation`` (hf backend);
2. a BiTA adapter (M=3, P=16 by default) trained with HF Trainer on CPU, then calibrated
   (``bita-eval --calibrate``) on ``--calibrate-prompts`` of the training prompts, so that
   ``auto:N`` trees can be evaluated;
3. ``bita-eval``'s measurement on a fixed Spec-Bench subset (the first ``--per-category``
   questions of each of the 13 categories, first turn): greedy ``generate`` with KV cache (the
   baseline), HF prompt-lookup decoding, and BiTA for every ``--trees`` shape, interleaved per question.

Writes results.json + results.md (and the eval's speed.json/speed.md/runs.json) under ``--out``.
Every stage is resumable: generated answers, the trained adapter and its calibration are reused
on a re-run. ``--dtype bfloat16`` calibrates and evaluates in bf16 (the equality report then
shows first divergences and ties).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEC_BENCH = HERE.parents[2] / ".." / "shared" / "data" / "spec_bench" / "question.jsonl"


def held_out_questions(path: str, tokenizer, per_category: int, limit: int) -> list[dict]:
    """The question file's records minus the evaluated subset (first ``per_category`` of each
    category), shuffled with seed 0, first ``limit``: training prompts disjoint from evaluation."""
    import random

    from leanlm.bita.evaluate import load_eval_prompts
    from leanlm.core.datasets import load_records

    evaluated = {p["id"] for p in load_eval_prompts(path, tokenizer, "chat", per_category=per_category)}
    rest = [r for r in load_records(path) if str(r.get("question_id", r.get("id"))) not in evaluated]
    random.Random(0).shuffle(rest)
    return rest[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--questions", default=str(SPEC_BENCH.resolve()))
    ap.add_argument("--train-prompts", type=int, default=48)
    ap.add_argument(
        "--train-source",
        choices=("instructions", "question-file-rest"),
        default="instructions",
        help="training prompts: the core 'instructions' set (another distribution than Spec-Bench), or "
        "the --questions file's questions that are NOT in the evaluated subset (same categories, "
        "disjoint questions)",
    )
    ap.add_argument("--gen-tokens", type=int, default=96)
    ap.add_argument("--num-masks", type=int, default=3)
    ap.add_argument("--num-prefix", type=int, default=16)
    ap.add_argument("--max-groups", type=int, default=24)
    ap.add_argument("--cutoff", type=int, default=384)
    ap.add_argument("--resample", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--per-category", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument(
        "--turns", type=int, default=1, help="2: also MT-Bench's second turns (bita-eval --turns)"
    )
    ap.add_argument(
        "--trees",
        default="1;1-1;3-2-1;auto:4;auto:8;1+pld:3",
        help="';'-separated trees (bita-eval syntax: 1, 1-1, tri:5, auto:N, <tree>+pld:L)",
    )
    ap.add_argument(
        "--calibrate-prompts",
        type=int,
        default=64,
        help="training prompts decoded for bita-eval --calibrate (held-in; 0 skips, auto:N then fails)",
    )
    ap.add_argument("--calibrate-tokens", type=int, default=64)
    ap.add_argument(
        "--dtype", default=None, help="model dtype for calibration and evaluation (e.g. bfloat16)"
    )
    ap.add_argument("--pld-tokens", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the CPU is shared)")
    args = ap.parse_args()

    import torch

    from leanlm.bita.evaluate import evaluate_speed, load_eval_prompts, render_divergence
    from leanlm.bita.model import BiTAConfig, BiTAModel, describe, load_bita
    from leanlm.bita.prompts import generate_outputs, make_prompts, training_records
    from leanlm.bita.train import train_adapter
    from leanlm.core.console import setup_logging
    from leanlm.core.datasets import load_records
    from leanlm.core.evaluation.speed import render_markdown
    from leanlm.core.generation import get_backend
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.records import read_json, read_jsonl, write_json, write_jsonl, write_text

    setup_logging()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    tok = load_tokenizer(args.model)
    base = load_model(args.model, device="cpu")

    # 1. self-distillation data (prompts disjoint from Spec-Bench)
    t0 = time.time()
    if args.train_source == "instructions":
        instructions = load_records("instructions", limit=args.train_prompts, seed=0)
    else:
        instructions = held_out_questions(args.questions, tok, args.per_category, args.train_prompts)
    prompts = make_prompts(instructions, tok, "chat", "short")
    write_jsonl(out / "prompts.jsonl", prompts)
    backend = get_backend("hf", model=base, tokenizer=tok, batch_size=8)
    generate_outputs(prompts, out / "data.jsonl", backend, max_new_tokens=args.gen_tokens)
    records = training_records(read_jsonl(out / "data.jsonl"))
    timings["generate_data_s"] = time.time() - t0

    # 2. train the adapter (reused when present)
    t0 = time.time()
    adapter = out / "adapter"
    summary = {}
    if (adapter / "adapter.safetensors").exists():
        bita = load_bita(adapter, base=base)
        logging.info("reusing the trained adapter in %s", adapter)
        run = out / "adapter" / "leanlm_run.json"
        summary = json.loads(run.read_text())["data"] if run.exists() else {}
    else:
        bita = BiTAModel(
            base, BiTAConfig(num_masks=args.num_masks, num_prefix=args.num_prefix, base_model=args.model)
        )
        summary = train_adapter(
            bita,
            tok,
            records,
            adapter,
            max_groups=args.max_groups,
            cutoff=args.cutoff,
            resample=args.resample,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=args.lr,
            logging_steps=5,
            save_steps=10_000,
            warmup_ratio=0.05,
        )
        timings["train_s"] = time.time() - t0
    logging.info(describe(bita))

    # 2b. calibration on held-in (training) prompts, saved beside the adapter
    from leanlm.bita.calibration import load_calibration
    from leanlm.bita.evaluate import calibrate_adapter

    if args.dtype:
        bita = bita.to(getattr(torch, args.dtype))
    calibration_summary = {}
    if args.calibrate_prompts and load_calibration(adapter) is None:
        t0 = time.time()
        held_in = [{"prompt": p["prompt"]} for p in prompts[: args.calibrate_prompts]]
        calibration_summary = calibrate_adapter(
            bita, tok, held_in, adapter, max_new_tokens=args.calibrate_tokens
        )
        timings["calibrate_s"] = time.time() - t0
    elif load_calibration(adapter) is not None:
        from leanlm.bita.calibration import summary as calibration_stats

        calibration_summary = calibration_stats(load_calibration(adapter))

    # 3. speed on the Spec-Bench subset
    t0 = time.time()
    questions = load_eval_prompts(
        args.questions, tok, "chat", per_category=args.per_category, turns=args.turns
    )
    trees = [t for t in args.trees.split(";") if t.strip()]
    report = evaluate_speed(
        bita,
        tok,
        questions,
        out,
        max_new_tokens=args.eval_tokens,
        trees=trees,
        pld_tokens=args.pld_tokens,
        title="BiTA on Spec-Bench (CPU, embedded SmolLM2-135M)",
        calibration=load_calibration(adapter),
    )
    timings["eval_s"] = time.time() - t0

    # 4. teacher-forced mask accuracy: on greedy's answers to the evaluated questions, and on
    #    training pairs (is the adapter or the per-step cost the limit?)
    from leanlm.bita.data import tokenize_pair
    from leanlm.bita.diagnostics import mask_accuracy

    prompt_of = {q["id"]: q["prompt"] for q in questions}
    greedy_runs = read_json(out / "runs.json")["greedy"]
    eval_pairs = [
        (tok(prompt_of[r["id"]], add_special_tokens=True)["input_ids"], r["output_ids"])
        for r in greedy_runs
        if r["id"] in prompt_of
    ]
    train_pairs = [tokenize_pair(tok, r["prompt"], r["output"]) for r in records[:64]]
    accuracy = {
        "eval_answers": mask_accuracy(bita, eval_pairs, cutoff=args.cutoff),
        "train_answers": mask_accuracy(bita, train_pairs, cutoff=args.cutoff),
    }
    settings = vars(args) | {
        "train_records": len(records),
        "questions": len(questions),
        "torch_threads": torch.get_num_threads(),
    }
    results = {
        "settings": settings,
        "timings": timings,
        "training": summary,
        "report": report,
        "mask_accuracy": accuracy,
        "calibration": calibration_summary,
    }
    write_json(out / "results.json", results)
    methods = report["methods"]
    best = max((m for m in methods if m.startswith("bita")), key=lambda m: methods[m]["overall"]["speedup"])
    lines = [
        render_markdown(report, "BiTA on Spec-Bench (CPU, embedded SmolLM2-135M)"),
        render_divergence(report.get("equality", {}), str(bita.dtype)),
        f"Fastest tree here: `{best}` ({methods[best]['overall']['speedup']:.2f}x, "
        f"mean accepted {methods[best]['overall']['mean_accepted']:.2f}).",
        "",
        "Teacher-forced mask accuracy (top-1 / top-5 per mask):",
        *(
            f"- {where}: "
            + ", ".join(
                f"mask {m['mask']} {m['top1']:.3f} / {m['top5']:.3f} (n={m['n']})" for m in acc["masks"]
            )
            for where, acc in accuracy.items()
        ),
        "",
        f"Calibration (held-in prompts): {json.dumps(calibration_summary)}",
        "",
        f"Settings: {json.dumps(settings)}",
        f"Timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}",
        f"Training: {json.dumps({k: v for k, v in summary.items() if k != 'losses'})}",
        f"Loss curve (every 5 steps): {[round(x, 3) for x in summary.get('losses', [])]}",
    ]
    write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
