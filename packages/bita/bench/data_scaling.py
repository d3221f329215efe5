"""BiTA draft quality vs training data (issue 19, item 3): MAT and mask hit rates as data grows.

Stages (each resumable; run them in order, every one skips what is already done):

    W=/tmp/bita_h5/work
    python data_scaling.py data     --work $W --pool 1024 --gen-tokens 64     # self-distilled answers
    python data_scaling.py evalset  --work $W --per-category 2 --eval-tokens 64 # greedy, batch 1
    python data_scaling.py train    --work $W --name d1024 --prompts 1024 --steps 256 --save-every 16
    python data_scaling.py measure  --work $W                                  # every adapter + checkpoint
    python data_scaling.py report   --work $W --out results/data_scaling        # JSON, Markdown, PNG
    python data_scaling.py speed    --work $W --run d1024 --out results/...     # greedy / PLD / BiTA, timed

* ``data``: the first ``--pool`` prompts of core's offline ``instructions`` set (GSM8K, ARC, OBQA,
  PIQA, HumanEval questions; seed 0; never Spec-Bench) in the model's chat template, answered
  greedily in batches through core's ``hf`` backend into one resumable JSONL. A run on N prompts
  trains on the first N (nested subsets).
* ``evalset``: a fixed Spec-Bench subset (the first ``--per-category`` questions of each of the 13
  categories, first turn), disjoint from the training prompts; greedy answers at batch size 1.
* ``train``: M, P, lr, schedule, steps or epochs per run; checkpoints every ``--save-every`` steps
  (all kept), and a killed run resumes from the last complete one (HF Trainer state). With
  ``--schedule constant`` (after a short warmup), checkpoint S of a one-epoch run over N prompts
  has seen S x batch distinct prompts once: the one-epoch point for that many prompts.
* ``measure``: for every adapter (final and checkpoints) the teacher-forced ranks of the true
  tokens under each mask on the evaluation answers (``diagnostics.teacher_forced_ranks``, one
  forward per answer; the real tokens' K/V computed once for all adapters). From them, exactly
  what decoding would measure in fp32: MAT (mean accepted tokens per forward, prefill included)
  for each tree, and each mask's top-1 / top-5 hit rate. ``auto:N`` trees come from a
  teacher-forced calibration on 32 held-in training answers. MAT is load-independent.
* ``report``: the table and ``mat_vs_data.png``; a fit of MAT against log(prompts) per series.
* ``speed``: one interleaved run (``bita-eval``'s ``evaluate_speed``): greedy with KV cache, PLD
  and BiTA trees, token-identical check, on the same subset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SPEC_BENCH = (HERE.parents[2] / ".." / "shared" / "data" / "spec_bench" / "question.jsonl").resolve()
TREES = ["1", "2", "3", "1-1", "1-1-1", "2-1", "3-2-1", "5-4-3"]
AUTO = [3, 8, 16]
HELD_IN = 32
log = logging.getLogger("data_scaling")


def _model(name: str) -> tuple[Any, Any]:
    from leanlm.core.models import load_model, load_tokenizer

    return load_tokenizer(name), load_model(name, device="cpu", dtype="float32")


def stage_data(a: argparse.Namespace) -> None:
    from leanlm.bita.prompts import generate_outputs, make_prompts
    from leanlm.core.datasets import load_records
    from leanlm.core.generation import get_backend
    from leanlm.core.records import write_jsonl

    tok, base = _model(a.model)
    work = Path(a.work) / "data"
    records = load_records("instructions", limit=a.pool, seed=0)
    prompts = make_prompts(records, tok, "chat", "short")
    write_jsonl(work / "prompts.jsonl", prompts)
    t0 = time.time()
    backend = get_backend("hf", model=base, tokenizer=tok, batch_size=a.gen_batch)
    generate_outputs(prompts, work / "data.jsonl", backend, max_new_tokens=a.gen_tokens)
    log.info("data: %d prompts answered (%.0f s this run)", len(prompts), time.time() - t0)


def training_pairs(work: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The answered (prompt, output) records in prompt-file order, first ``limit`` (nested subsets
    for growing N). A data stage stopped early has answered the shortest prompts first (the hf
    backend sorts by length), so a partial pool leans towards shorter prompts."""
    from leanlm.bita.prompts import training_records
    from leanlm.core.records import read_jsonl

    order = [p["id"] for p in read_jsonl(work / "data" / "prompts.jsonl")]
    by_id = {r["id"]: r for r in training_records(read_jsonl(work / "data" / "data.jsonl"))}
    answered = [by_id[i] for i in order if i in by_id]
    if limit and len(answered) < limit:
        raise SystemExit(f"only {len(answered)} prompts are answered, {limit} asked: run the data stage")
    return answered[: limit or len(answered)]


def stage_evalset(a: argparse.Namespace) -> None:
    from leanlm.bita.decoding import greedy_reference
    from leanlm.bita.evaluate import load_eval_prompts
    from leanlm.core.generation.hf import end_token_ids, until_end
    from leanlm.core.records import ResumableJsonlWriter
    from leanlm.core.sft import encode_prompt

    tok, base = _model(a.model)
    questions = load_eval_prompts(a.questions, tok, "chat", per_category=a.per_category)
    end = end_token_ids(base.generation_config, tok)  # the end ids bita-eval stops and cuts at
    with ResumableJsonlWriter(Path(a.work) / "eval" / "answers.jsonl") as w:
        for q in questions:
            if q["id"] in w:
                continue
            ids = encode_prompt(tok, q["prompt"])
            out = until_end(greedy_reference(base, ids, a.eval_tokens, sorted(end) or None), end)
            w.write(q | {"prompt_ids": ids, "answer_ids": out})
            log.info("eval answer %s (%s): %d tokens", q["id"], q["category"], len(out))


def stage_train(a: argparse.Namespace) -> None:
    from leanlm.bita.model import BiTAConfig, BiTAModel
    from leanlm.bita.train import train_adapter

    work = Path(a.work)
    out = work / "runs" / a.name
    if (out / "leanlm_run.json").exists() and (out / "adapter.safetensors").exists():
        log.info("%s: already trained", a.name)
        return
    records = training_pairs(work, a.prompts)
    tok, base = _model(a.model)
    bita = BiTAModel(
        base,
        BiTAConfig(num_masks=a.num_masks, num_prefix=a.num_prefix, base_model=a.model),
        seed=a.seed,
    )
    steps = a.steps
    if steps is None:  # whole epochs over the resampled data
        steps = max(1, math.ceil(a.epochs * len(records) * a.resample / a.batch_size))
    t0 = time.time()
    summary = train_adapter(
        bita,
        tok,
        records,
        out,
        max_groups=a.max_groups,
        cutoff=a.cutoff,
        resample=a.resample,
        max_steps=steps,
        per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=a.lr,
        lr_scheduler_type="constant_with_warmup" if a.schedule == "constant" else a.schedule,
        warmup_steps=a.warmup,
        logging_steps=4,
        save_steps=a.save_every,
        save_total_limit=100_000,  # keep every checkpoint: each is a measured point
    )
    from leanlm.core.records import write_json

    meta = {
        "name": a.name,
        "prompts": len(records),
        "steps": steps,
        "batch_size": a.batch_size,
        "resample": a.resample,
        "epochs": steps * a.batch_size / max(1, len(records) * a.resample),
        "num_masks": a.num_masks,
        "num_prefix": a.num_prefix,
        "lr": a.lr,
        "schedule": a.schedule,
        "max_groups": a.max_groups,
        "cutoff": a.cutoff,
        "train_s": time.time() - t0,
        "summary": {k: v for k, v in summary.items() if k != "losses"},
        "losses": summary.get("losses", []),
    }
    write_json(out / "scaling_run.json", meta)
    log.info("%s: %s", a.name, json.dumps(meta["summary"]))


def adapters(work: Path) -> list[tuple[str, Path, int | None]]:
    """(run name, adapter folder, checkpoint step or None for the final adapter)."""
    found = []
    for run in sorted((work / "runs").glob("*")):
        if not (run / "scaling_run.json").exists():
            continue  # unfinished: its checkpoints are measured once the run is done
        found.append((run.name, run, None))
        for ck in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            if (ck / "adapter.safetensors").exists():
                found.append((run.name, ck, int(ck.name.split("-")[1])))
    return found


def stage_measure(a: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import load_file

    from leanlm.bita.calibration import choose_tree
    from leanlm.bita.data import tokenize_pair
    from leanlm.bita.diagnostics import (
        rank_summary,
        teacher_forced_calibration,
        teacher_forced_kv,
        teacher_forced_ranks,
    )
    from leanlm.bita.model import ADAPTER_FILE, BiTAModel, read_adapter_config
    from leanlm.bita.trees import TreeSpec
    from leanlm.core.records import read_json, read_jsonl, write_json

    work = Path(a.work)
    keep = {int(x) for x in a.measure_steps.split(",")} if a.measure_steps else None
    todo = [
        (n, f, s)
        for n, f, s in adapters(work)
        if not (f / "draft.json").exists() and (s is None or keep is None or s in keep)
    ]
    if not todo:
        log.info("measure: nothing new")
        return
    tok, base = _model(a.model)
    answers = read_jsonl(work / "eval" / "answers.jsonl")
    eval_pairs = [(r["prompt_ids"], r["answer_ids"]) for r in answers]
    held = [tokenize_pair(tok, r["prompt"], r["output"]) for r in training_pairs(work, HELD_IN)]
    by_masks: dict[int, BiTAModel] = {}
    kv_cache: dict[int, tuple[list, list]] = {}
    for name, folder, step in todo:
        t0 = time.time()
        config = read_adapter_config(folder)
        M = config.num_masks
        if M not in by_masks:
            by_masks[M] = BiTAModel(base, config, init=False).eval()
        bita = by_masks[M]
        if bita.num_prefix != config.num_prefix:
            bita = BiTAModel(base, config, init=False).eval()
        bita.load_adapter_state(load_file(str(folder / ADAPTER_FILE)), where=str(folder))
        if M not in kv_cache:  # the real tokens' K/V do not depend on the adapter
            kv_cache[M] = (
                [teacher_forced_kv(bita, s, t) for s, t in eval_pairs],
                [teacher_forced_kv(bita, s, t) for s, t in held],
            )
        eval_kv, held_kv = kv_cache[M]
        with torch.no_grad():
            ranks = [
                teacher_forced_ranks(bita, s, t, real_kv=kv)
                for (s, t), kv in zip(eval_pairs, eval_kv, strict=True)
            ]
            cal = teacher_forced_calibration(bita, held, held_kv=held_kv)
        trees = [TreeSpec.parse(t, M) for t in TREES if len(t.split("-")) <= M]
        trees += [choose_tree(cal, n, M) for n in AUTO]
        report = rank_summary(ranks, trees)
        report["auto_trees"] = {f"auto:{n}": [list(p) for p in t.paths] for n, t in zip(AUTO, trees[-3:])}
        report["held_in_expected"] = {t.label(): cal.expected_accepted(t) for t in trees[-3:]}
        cal.save(folder)  # auto:N for bita-eval / the speed stage
        run = read_json(folder / "scaling_run.json" if step is None else folder.parent / "scaling_run.json")
        seen = (step if step is not None else run["steps"]) * run["batch_size"]
        report["point"] = {
            "run": name,
            "step": step if step is not None else run["steps"],
            "final": step is None,
            "prompts": run["prompts"],
            "examples_seen": seen,
            "distinct_prompts_seen": min(run["prompts"], seen // max(1, run["resample"]))
            if run["resample"] == 1
            else run["prompts"],
            "epochs": seen / max(1, run["prompts"] * run["resample"]),
            "num_masks": M,
            "num_prefix": config.num_prefix,
            "lr": run["lr"],
            "schedule": run["schedule"],
        }
        report["eval_answers"] = len(eval_pairs)
        report["seconds"] = time.time() - t0
        write_json(folder / "draft.json", report)
        log.info(
            "%s step %s: MAT %s, mask top-1 %s (%.0f s)",
            name,
            report["point"]["step"],
            {k: round(v, 3) for k, v in report["mat"].items()},
            [round(m["top1"], 3) for m in report["masks"]],
            report["seconds"],
        )


def collect(work: Path) -> list[dict[str, Any]]:
    from leanlm.core.records import read_json

    return [read_json(f / "draft.json") for _, f, _ in adapters(work) if (f / "draft.json").exists()]


def fit_log(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares y = a + b ln x; None with fewer than 2 distinct x."""
    if len(set(xs)) < 2:
        return None
    lx = [math.log(x) for x in xs]
    mx, my = sum(lx) / len(lx), sum(ys) / len(ys)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, ys, strict=True)) / sum((u - mx) ** 2 for u in lx)
    return my - b * mx, b


def stage_report(a: argparse.Namespace) -> None:
    from leanlm.core.bench_report import machine_info, machine_line
    from leanlm.core.records import write_json, write_text

    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    points = collect(work)
    if not points:
        raise SystemExit("no measured adapters: run train and measure first")
    series = {s.split("=")[0]: s.split("=")[1].split(",") for s in a.series}
    rows, fits = [], {}
    trees_shown = ["1", "1-1-1", "3-2-1", "auto:3", "auto:8", "auto:16"]
    for p in sorted(points, key=lambda r: (r["point"]["run"], r["point"]["step"])):
        pt = p["point"]
        rows.append(pt | {"mat": p["mat"], "masks": p["masks"]})
    for label, members in series.items():
        sel = []
        for m in members:  # "run" = its final adapter, "run@S" = its checkpoint S
            run, _, step = m.partition("@")
            for r in rows:
                if r["run"] == run and ((step and r["step"] == int(step)) or (not step and r["final"])):
                    sel.append(r)
        xs_key = "distinct_prompts_seen"
        for tree in trees_shown:
            pts = [(r[xs_key], r["mat"][tree]) for r in sel if tree in r["mat"]]
            fit = fit_log([x for x, _ in pts], [y for _, y in pts])
            if fit:
                a0, b = fit
                need = math.exp((2.0 - a0) / b) if b > 0 else None
                fits.setdefault(label, {})[tree] = {"a": a0, "b_per_ln": b, "prompts_for_mat_2": need}
        fits.setdefault(label, {})["points"] = [
            {"run": r["run"], "step": r["step"], "prompts": r[xs_key]} for r in sel
        ]
    info = machine_info(1)
    result = {"rows": rows, "series": series, "fits": fits, "machine": info}
    write_json(out / "results.json", result)
    lines = [
        "# BiTA draft quality vs training data (teacher-forced, exact decoding MAT)",
        "",
        machine_line(info),
        "",
        "| run | step | prompts | distinct seen | epochs | M | P | lr | "
        + " | ".join(f"MAT {t}" for t in trees_shown)
        + " | mask top-1 |",
        "|---" * (8 + len(trees_shown) + 1) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']}{'' if r['final'] else ' (ckpt)'} | {r['step']} | {r['prompts']} | "
            f"{r['distinct_prompts_seen']} | {r['epochs']:.2f} | {r['num_masks']} | {r['num_prefix']} | "
            f"{r['lr']:g} | "
            + " | ".join(f"{r['mat'].get(t, float('nan')):.3f}" for t in trees_shown)
            + " | "
            + " / ".join(f"{m['top1']:.3f}" for m in r["masks"])
            + " |"
        )
    lines += ["", "Fits MAT = a + b ln(prompts) per series (prompts needed for MAT 2.0 where b > 0):", ""]
    for label, f in fits.items():
        for tree, v in f.items():
            if tree == "points":
                continue
            need = v["prompts_for_mat_2"]
            reach = f"{need:.3g} prompts" if need else "never (b <= 0)"
            lines.append(
                f"- {label}, tree {tree}: a={v['a']:.3f}, b={v['b_per_ln']:.4f} per ln; MAT 2.0 at {reach}"
            )
    write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(series, rows, fits, out / "mat_vs_data.png", trees_shown)


def plot(series: dict, rows: list, fits: dict, path: Path, trees: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, tree_set in zip(axes, (["1", "auto:3"], ["1-1-1", "auto:8", "auto:16"]), strict=True):
        for (label, pts), style in zip(fits.items(), ("o-", "s--", "^:", "d-."), strict=False):
            keys = {(p["run"], p["step"]) for p in pts["points"]}
            sel = sorted(
                (r for r in rows if (r["run"], r["step"]) in keys), key=lambda r: r["distinct_prompts_seen"]
            )
            for tree in tree_set:
                xs = [r["distinct_prompts_seen"] for r in sel]
                ys = [r["mat"][tree] for r in sel if tree in r["mat"]]
                if len(ys) != len(xs) or not xs:
                    continue
                ax.plot(xs, ys, style, label=f"{label}: {tree}")
        ax.axhline(2.0, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ticks = sorted({r["distinct_prompts_seen"] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training prompts (distinct, seen)")
        ax.set_ylabel("MAT (accepted tokens / forward)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("BiTA on SmolLM2-135M: MAT on 26 Spec-Bench questions vs training data (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def stage_speed(a: argparse.Namespace) -> None:
    import torch

    from leanlm.bita.calibration import load_calibration
    from leanlm.bita.evaluate import evaluate_speed, load_eval_prompts, render_divergence
    from leanlm.bita.model import load_bita
    from leanlm.core.bench_report import machine_info, machine_line
    from leanlm.core.records import write_json

    work, out = Path(a.work), Path(a.out)
    folder = work / "runs" / a.run
    if a.step:
        folder = folder / f"checkpoint-{a.step}"
    tok, base = _model(a.model)
    bita = load_bita(folder, base=base)
    questions = load_eval_prompts(a.questions, tok, "chat", per_category=a.per_category)
    trees = [t for t in a.trees.split(";") if t.strip()]
    t0 = time.time()
    load0 = os.getloadavg()
    report = evaluate_speed(
        bita,
        tok,
        questions,
        out,
        max_new_tokens=a.eval_tokens,
        trees=trees,
        pld_tokens=a.pld_tokens,
        title=f"BiTA ({a.run}) on Spec-Bench, CPU fp32 1 thread",
        calibration=load_calibration(folder),
    )
    info = machine_info(torch.get_num_threads())
    meta = {
        "adapter": str(folder),
        "seconds": time.time() - t0,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "machine": info,
    }
    write_json(out / "speed_meta.json", meta)
    print(machine_line(info))
    print(render_divergence(report.get("equality", {}), str(bita.dtype)))
    for m, v in report["methods"].items():
        o = v["overall"]
        print(f"{m}: {o['speedup']:.3f}x, MAT {o['mean_accepted']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("data", "evalset", "train", "measure", "report", "speed"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default=str(HERE / "results" / "data_scaling"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--questions", default=str(SPEC_BENCH))
    ap.add_argument("--pool", type=int, default=1024)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--gen-batch", type=int, default=16)
    ap.add_argument("--per-category", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--name")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--num-masks", type=int, default=3)
    ap.add_argument("--num-prefix", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--schedule", default="constant", help="constant (after warmup) or any HF scheduler name")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--max-groups", type=int, default=32)
    ap.add_argument("--cutoff", type=int, default=256)
    ap.add_argument("--resample", type=int, default=1)
    ap.add_argument("--save-every", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--series",
        nargs="*",
        default=[],
        help="label=run[@step],run[@step],.. : points joined in the plot and fitted",
    )
    ap.add_argument("--measure-steps", help="checkpoint steps to measure, e.g. 16,32,64 (default: all)")
    ap.add_argument("--run")
    ap.add_argument("--step", type=int)
    ap.add_argument("--trees", default="1;auto:3;1+pld:3")
    ap.add_argument("--pld-tokens", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.stage == "train" and (not a.name or not a.prompts):
        ap.error("train needs --name and --prompts")
    if a.stage == "speed" and not a.run:
        ap.error("speed needs --run")
    import torch

    from leanlm.core.console import setup_logging

    setup_logging()
    torch.set_num_threads(a.threads)
    {
        "data": stage_data,
        "evalset": stage_evalset,
        "train": stage_train,
        "measure": stage_measure,
        "report": stage_report,
        "speed": stage_speed,
    }[a.stage](a)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
