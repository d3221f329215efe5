"""D-LLM benchmark: one offline task, three fine-tunes on the same data, all in one run.

    uv run python packages/dllm/bench/run.py --task piqa --train 128 --steps 16 --test 100

1. D-LLM (routers + LoRA, target execution ratio 0.5) -> accuracy, execution / FLOPs ratio.
2. Dense LoRA fine-tune (same data, steps, LoRA) -> accuracy at FLOPs ratio 1.
3. Static layer dropping at the same compute (Shortened-LLaMA PPL criterion on calibration
   batches: drop the blocks whose removal raises the loss least), then the same LoRA fine-tune; at
   the two block counts that bracket D-LLM's FLOPs ratio, each compared with D-LLM example by example.
4. Batch-1 greedy decode tokens/s of each model through the same decode loop (plus HF generate).
Writes results.json and results.md to bench/results/<label>/ (--label, default cpu; or --out).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch

from leanlm.core.models import load_model, load_tokenizer
from leanlm.core.records import write_json, write_text
from leanlm.core.sft import PaddingCollator
from leanlm.dllm import DLLM, DLLMConfig, generate
from leanlm.dllm.data import load_examples, tokenize
from leanlm.dllm.evaluate import choice_accuracy
from leanlm.dllm.static import drop_layers, layer_importance, warm_start_routers
from leanlm.dllm.train import DLLM_RECIPE, finetune


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train(net: DLLM, tok, feats, args, out: Path, router_lr: float | None = None) -> dict:
    flags = DLLM_RECIPE.override(
        epochs=1,
        batch_size=args.batch,
        max_steps=args.steps,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        logging_steps=max(1, args.steps // 4),
        save_steps=10**6,
        resume=False,
    )
    return finetune(net, tok, feats, out, flags, router_lr=router_lr, router_schedule=args.router_schedule)


def decode_speed(net: DLLM, tok, prompts: list[str], new_tokens: int) -> dict:
    total_tokens, total_s, ratios = 0, 0.0, []
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        out = generate(net, ids, max_new_tokens=new_tokens)  # no EOS: every run decodes the same length
        total_tokens += out.new_tokens - 1  # the first token comes from the prefill
        total_s += out.decode_seconds
        ratios.append(out.stats[0])
    keys = ("exec_ratio", "decode_exec_ratio", "flops_ratio", "kv_ratio")
    return {"tokens_per_s": total_tokens / total_s} | {
        k: sum(r[k] for r in ratios) / len(ratios) for k in keys
    }


def hf_speed(model, tok, prompts: list[str], new_tokens: int) -> float:
    n, s = 0, 0.0
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        t0 = time.perf_counter()
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        s += time.perf_counter() - t0
        n += new_tokens
    return n / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="piqa")
    ap.add_argument(
        "--choice_format",
        default="text",
        choices=("text", "number"),
        help="text: train on the right option's text, score options by log-likelihood; "
        "number: the original piqa template (answer with the option's number)",
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--train", type=int, default=128, help="training examples")
    ap.add_argument("--test", type=int, default=100, help="held-out test examples")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    ap.add_argument("--router_lr", type=float, default=3e-2)
    ap.add_argument(
        "--router_schedule",
        default="constant",
        choices=("constant", "cosine"),
        help="router LR after warm-up: constant, or the LoRA's cosine decay",
    )
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--lambda_max", type=float, default=10.0, help="ratio-loss weight at the end of the ramp")
    ap.add_argument("--lambda_ramp", type=float, default=1.0, help="fraction of training to reach lambda_max")
    ap.add_argument(
        "--ratio_scope",
        default="token",
        choices=("token", "batch"),
        help="ratio loss on every token's ratio (the original) or on the batch mean",
    )
    ap.add_argument(
        "--router_init",
        default="default",
        choices=("default", "importance"),
        help="default: every router biased to execute (the original); importance: biases start at "
        "the static allocation for the target (same ranking as the static baseline)",
    )
    ap.add_argument("--router_margin", type=float, default=2.0, help="logit gap of --router_init importance")
    ap.add_argument("--max_length", type=int, default=192, help="tokens per training example")
    ap.add_argument("--calib_batches", type=int, default=2)
    ap.add_argument("--decode_prompts", type=int, default=3)
    ap.add_argument("--decode_tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--skip_base", action="store_true", help="skip the zero-shot base-model row")
    ap.add_argument("--dllm_only", action="store_true", help="stop after the D-LLM row and the decode speeds")
    ap.add_argument("--label", default="cpu", help="results go to bench/results/<label>/")
    ap.add_argument("--out", default=None, help="folder instead of bench/results/<label>/")
    args = ap.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" / args.label)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    work = out / "work"
    t_start = time.time()
    torch.manual_seed(0)

    tok = load_tokenizer(args.model)
    base = load_model(args.model, device="cpu")
    n_layers = len(base.model.layers)
    fmt = {"choice_format": args.choice_format}
    train_ex = load_examples(args.task, "train", limit=args.train, test_size=args.test, **fmt)
    test_ex = load_examples(args.task, "test", test_size=args.test, **fmt)
    feats = tokenize(tok, train_ex, args.max_length)
    results: dict = {"args": vars(args), "layers": n_layers, "torch_threads": torch.get_num_threads()}

    def save() -> None:  # after every phase: a run cut short still reports what it measured
        results["seconds"] = time.time() - t_start
        write_json(out / "results.json", results)
        write_text(out / "results.md", render(results))

    plain = DLLM(copy.deepcopy(base), DLLMConfig(dynamic=False, lora_rank=0)).eval()
    prompts = [e.prompt for e in test_ex[: args.decode_prompts]]
    # layer importance (Shortened-LLaMA PPL criterion) on the first training batches: ranks the blocks
    # for the static baseline and, with --router_init importance, for the routers' starting biases
    collate = PaddingCollator(tok.pad_token_id)
    calib = [collate(feats[i * args.batch : (i + 1) * args.batch]) for i in range(args.calib_batches)]
    scores = layer_importance(plain, calib)
    results["layer_importance"] = scores
    log("D-LLM fine-tune")
    dllm = DLLM(
        copy.deepcopy(base),
        DLLMConfig(
            target=args.target,
            lambda_max=args.lambda_max,
            lambda_ramp=args.lambda_ramp,
            ratio_scope=args.ratio_scope,
        ),
    )
    if args.router_init == "importance":
        results["router_init_layers"] = warm_start_routers(dllm, scores, args.router_margin)
    results["dllm_train"] = train(dllm, tok, feats, args, work / "dllm", router_lr=args.router_lr)
    dllm.save(work / "dllm_model")  # routers + LoRA (small): reusable with dllm-eval
    dllm.merge_lora().eval()
    results["reserve_initials"] = dllm.config.reserve_initials
    results["dllm"] = choice_accuracy(dllm, tok, test_ex, per_example=True)
    flops = results["dllm"]["flops_ratio"]
    log("decode speed (batch 1, greedy): D-LLM vs dense (LoRA merged or not, dense costs the same)")
    results["speed"] = {
        "dllm": decode_speed(dllm, tok, prompts, args.decode_tokens),
        "dense": decode_speed(plain, tok, prompts, args.decode_tokens),
        "hf_generate_dense": {"tokens_per_s": hf_speed(base, tok, prompts, args.decode_tokens)},
    }
    save()
    if args.dllm_only:
        print(render(results))
        return

    log("dense LoRA fine-tune")
    dense = DLLM(copy.deepcopy(base), DLLMConfig(dynamic=False))
    results["dense_train"] = train(dense, tok, feats, args, work / "dense")
    dense.merge_lora().eval()
    results["dense"] = choice_accuracy(dense, tok, test_ex, per_example=True)
    save()

    log("static layer dropping at equal compute")
    # the two block counts that bracket D-LLM's FLOPs ratio (one when it lands on a whole count)
    counts = sorted(
        {max(1, math.floor(flops * n_layers + 1e-9)), min(n_layers, math.ceil(flops * n_layers - 1e-9))}
    )
    results["statics"] = []
    ranked = sorted(range(n_layers), key=lambda i: -scores[i])
    for keep_n in counts:
        keep = sorted(ranked[:keep_n])
        static = DLLM(drop_layers(copy.deepcopy(base), keep), DLLMConfig(dynamic=False))
        row = {"layers_kept": keep, "train": train(static, tok, feats, args, work / f"static_{keep_n}")}
        static.merge_lora().eval()
        row["eval"] = choice_accuracy(static, tok, test_ex, per_example=True) | {
            "flops_ratio": keep_n / n_layers,
            "exec_ratio": keep_n / n_layers,
        }
        row["speed"] = decode_speed(static, tok, prompts, args.decode_tokens)
        row["paired_dllm_minus_static"] = paired(results["dllm"], row["eval"])
        results["statics"].append(row)
        save()
        del static

    if not args.skip_base:
        log("zero-shot base model")
        results["base"] = choice_accuracy(plain, tok, test_ex, per_example=True)
        save()
    print(render(results))


def paired(a: dict, b: dict) -> dict:
    """Mean and standard error of a - b over the same test examples."""
    if "per_example" not in a or "per_example" not in b:
        return {}
    out = {}
    for key in [k for k in a["per_example"] if k in b["per_example"]]:  # no correct_norm in the number format
        d = [x - y for x, y in zip(a["per_example"][key], b["per_example"][key])]
        mean = sum(d) / len(d)
        var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
        out[key] = {"mean": mean, "se": math.sqrt(var / len(d))}
    return out


def render(r: dict) -> str:
    sp = r["speed"]
    dense_tps = sp["dense"]["tokens_per_s"]
    a = r["args"]
    rows = []
    if "base" in r:
        rows.append(("base model, no fine-tune", r["base"], 1.0, 1.0, None))
    if "dense" in r:
        rows.append(("dense LoRA fine-tune", r["dense"], 1.0, 1.0, dense_tps))
    for st in r.get("statics", []):
        rows.append(
            (
                f"static drop ({len(st['layers_kept'])}/{r['layers']} layers) + LoRA",
                st["eval"],
                st["eval"]["exec_ratio"],
                st["eval"]["flops_ratio"],
                st["speed"]["tokens_per_s"],
            )
        )
    rows.append(
        (
            f"D-LLM target {a['target']}",
            r["dllm"],
            r["dllm"]["exec_ratio"],
            r["dllm"]["flops_ratio"],
            sp["dllm"]["tokens_per_s"],
        )
    )
    lines = [
        f"Task {a['task']} ({a.get('choice_format', 'number')} format): {a['train']} training examples, {a['steps']} steps x batch {a['batch']}, "
        f"{r['dllm']['examples']} test examples; model {a['model']} ({r['layers']} layers); "
        f"{r['seconds'] / 60:.1f} min total on a shared CPU ({r['torch_threads']} torch threads); "
        f"router lr {a['router_lr']} ({a.get('router_schedule', 'cosine')}), lambda_max {a.get('lambda_max', 5.0)} reached at {a.get('lambda_ramp', 1.0):.0%} of training; "
        f"ratio loss per {a.get('ratio_scope', 'token')}; router init {a.get('router_init', 'default')}"
        + (f" (margin {a['router_margin']})." if a.get("router_init") == "importance" else "."),
        "",
        "| model | accuracy | accuracy (per char) | answer NLL | exec ratio | FLOPs ratio (blocks) | decode tok/s "
        "| speed vs dense |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m, ex, fl, tps in rows:
        speed = f"{tps:.1f}" if tps else "-"
        rel = f"{tps / dense_tps:.2f}x" if tps else "-"
        lines.append(
            f"| {name} | {m['accuracy']:.3f} | {m.get('accuracy_norm', float('nan')):.3f} | {m['answer_nll']:.3f} "
            f"| {ex:.3f} | {fl:.3f} | {speed} | {rel} |"
        )
    for st in r.get("statics", []):
        pd = st.get("paired_dllm_minus_static")
        if pd:
            names = {"correct": "accuracy", "correct_norm": "per char", "nll": "answer NLL"}
            parts = [f"{names[k]} {pd[k]['mean']:+.3f} +- {pd[k]['se']:.3f}" for k in names if k in pd]
            lines += [
                "",
                f"D-LLM minus static ({len(st['layers_kept'])} layers), paired over the same test "
                f"examples (mean +- standard error): {', '.join(parts)}.",
            ]
    d = sp["dllm"]
    if "exec_ratio_routed" in r["dllm"]:
        lines += [
            "",
            f"D-LLM execution ratio on the test sequences past the {r.get('reserve_initials', 2)} reserved "
            f"(always executing) tokens: {r['dllm']['exec_ratio_routed']:.3f}.",
        ]
    lines += [
        "",
        f"D-LLM decode: executed-layer ratio {d['decode_exec_ratio']:.3f} on generated tokens, "
        f"FLOPs ratio {d['flops_ratio']:.3f} (routers included, prompt + generated tokens), KV-entries ratio "
        f"{d['kv_ratio']:.3f}; dense decode loop {dense_tps:.1f} tok/s; HF generate (dense) "
        f"{sp['hf_generate_dense']['tokens_per_s']:.1f} tok/s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
