"""Benchmark: ``leanlm serve`` against the same model decoded in process, side by side in one run.

For each model variant (the embedded model in fp32 ``plain``; ``int4``: its linears packed to 4 bits
with round-to-nearest, groups of 64, served in bf16 so the packed CPU kernels run) and each
concurrency c in ``--concurrency``:

* ``in-process``: the requests decoded without a server, c at a time (core's ``hf`` backend,
  ``batch_size=c``: batched ``model.generate``), the baseline;
* ``served``: the same requests sent c at a time to ``leanlm serve`` on a loopback port (httpx),
  each timed from send to last byte: tokens/s over the run, p50/p95 latency per request;
* ``openai backend``: core's ``openai`` backend (what Lion and ``bita-gen-outputs`` use) sending
  them at concurrency c to the same server.

The serving overhead is ``served wall / in-process wall`` (target under 1.15 at concurrency 1).
Greedy, the same prompts and ``--max-tokens`` everywhere; variants and methods interleaved per
repeat; medians reported.

``bita`` (with ``--bita-adapter FOLDER``, a BiTA adapter for the embedded model, and leanlm-bita installed):
the registered ``bita`` backend (tree ``--bita-tree``), in process vs ``leanlm serve --backend bita``.
BiTA decodes one request at a time, so at concurrency c the server queues and the in-process
baseline runs the same requests one after another.

    uv run python packages/core/bench/serve.py --label cpu-2t --threads 2 --variants plain,int4,bita \
        --bita-adapter ADAPTER
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from leanlm.core.bench_report import machine_info, machine_line, save_section
from leanlm.core.datasets import load_records
from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend
from leanlm.core.models import load_model, load_tokenizer
from leanlm.core.records import write_text
from leanlm.core.serving import Server, build_engine
from leanlm.core.serving.app import ServerLimits

HERE = Path(__file__).resolve().parent


def int4_model(model: Any) -> Any:
    """``model`` with every linear but ``lm_head`` packed to 4 bits (RTN, g=64), in bf16."""
    from leanlm.core.kernels import lowbit
    from leanlm.core.packed import PackedLinear, warm_up

    packed = copy.deepcopy(model).to(torch.bfloat16)
    for name, module in list(packed.named_modules()):
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            q = lowbit.quantize_asym(module.weight.detach().float(), 4, 64)
            layer = PackedLinear.from_codes(q.codes, q.scales, q.zeros, 4, 64, module.bias)
            parent, _, child = name.rpartition(".")
            setattr(packed.get_submodule(parent), child, layer)
    warm_up(packed, torch.bfloat16)
    return packed.eval()


def prompts(n: int) -> list[str]:
    records = load_records("instructions")
    return [r["instruction"] for r in records[:n]]


def in_process(model: Any, tok: Any, texts: list[str], c: int, max_tokens: int) -> dict[str, float]:
    """``model``: an HF model (core's ``hf`` backend, batches of c) or a ready backend (run as it is)."""
    backend = model if hasattr(model, "run") else get_backend("hf", model=model, tokenizer=tok, batch_size=c)
    reqs = [
        GenerationRequest(id=str(i), messages=[{"role": "user", "content": t}]) for i, t in enumerate(texts)
    ]
    t0 = time.perf_counter()
    results = generate(reqs, backend, SamplingParams(max_new_tokens=max_tokens), progress=False)
    wall = time.perf_counter() - t0
    tokens = sum(
        r.completion_tokens or len(tok(r.text, add_special_tokens=False)["input_ids"]) for r in results
    )
    return {"wall_s": wall, "tokens": tokens}


def served(server: Server, name: str, texts: list[str], c: int, max_tokens: int) -> dict[str, float]:
    def one(text: str) -> tuple[float, int]:
        body = {
            "model": name,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        t0 = time.perf_counter()
        r = httpx.post(server.openai_url + "/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t0, r.json()["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(c) as pool:
        done = list(pool.map(one, texts))
    wall = time.perf_counter() - t0
    lat = sorted(d for d, _ in done)
    return {
        "wall_s": wall,
        "tokens": sum(n for _, n in done),
        "p50_s": statistics.median(lat),
        "p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
    }


def via_openai_backend(
    server: Server, name: str, texts: list[str], c: int, max_tokens: int
) -> dict[str, float]:
    backend = get_backend("openai", base_url=server.openai_url, api_key="x", model=name, concurrency=c)
    reqs = [
        GenerationRequest(id=str(i), messages=[{"role": "user", "content": t}]) for i, t in enumerate(texts)
    ]
    t0 = time.perf_counter()
    results = generate(reqs, backend, SamplingParams(max_new_tokens=max_tokens), progress=False)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tokens": sum(r.completion_tokens or 0 for r in results)}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--variants", default="plain,int4")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(4, 2c))")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bita-adapter", default=None, help="BiTA adapter folder for the bita variant")
    ap.add_argument("--bita-tree", default="1")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    tok = load_tokenizer("default")
    base = load_model("default", dtype="float32", device="cpu")
    models = {"plain": base}
    if "int4" in args.variants.split(","):
        models["int4"] = int4_model(base)
    if "bita" in args.variants.split(","):
        if not args.bita_adapter:
            raise SystemExit("the bita variant needs --bita-adapter FOLDER")
        models["bita"] = get_backend("bita", model=args.bita_adapter, tree=args.bita_tree, dtype="float32")
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict[str, Any]] = []
    for variant in [v for v in args.variants.split(",") if v in models]:
        if variant == "bita":
            from leanlm.core.serving.engine import BackendEngine

            engine = BackendEngine(models[variant], tok)
        else:
            engine = build_engine(models[variant], tok, max_batch=max(levels))
        with Server(engine, variant, ServerLimits(max_tokens=args.max_tokens)) as server:
            warm = prompts(2)  # first calls pay one-time costs (kernels, allocator, the event loop)
            in_process(models[variant], tok, warm, 2, 4)
            served(server, variant, warm, 2, 4)
            for c in levels:
                texts = prompts(args.requests or max(4, 2 * c))
                runs: dict[str, list] = {"in_process": [], "served": [], "openai_backend": []}
                for _ in range(args.repeats):  # interleaved: machine noise hits all three alike
                    runs["in_process"].append(in_process(models[variant], tok, texts, c, args.max_tokens))
                    runs["served"].append(served(server, variant, texts, c, args.max_tokens))
                    runs["openai_backend"].append(
                        via_openai_backend(server, variant, texts, c, args.max_tokens)
                    )
                m = {k: median_of(v) for k, v in runs.items()}
                row = {
                    "variant": variant,
                    "concurrency": c,
                    "requests": len(texts),
                    **{f"{k}_tok_s": v["tokens"] / v["wall_s"] for k, v in m.items()},
                    "served_p50_s": m["served"]["p50_s"],
                    "served_p95_s": m["served"]["p95_s"],
                    "overhead": m["served"]["wall_s"] / m["in_process"]["wall_s"],
                    "openai_backend_overhead": m["openai_backend"]["wall_s"] / m["in_process"]["wall_s"],
                    "runs": runs,
                }
                rows.append(row)
                print(
                    f"{variant} c={c}: in-process {row['in_process_tok_s']:.1f} tok/s, served "
                    f"{row['served_tok_s']:.1f} tok/s (p50 {row['served_p50_s']:.2f} s, p95 "
                    f"{row['served_p95_s']:.2f} s), overhead {row['overhead']:.2f}x",
                    flush=True,
                )
    out = HERE / "results" / args.label
    lines = [
        "## leanlm serve vs in-process decoding",
        "",
        machine_line(info),
        "",
        f"Greedy, {args.max_tokens} new tokens, chat prompts from the offline instruction set, median of "
        f"{args.repeats} interleaved repeats. Overhead = served wall time / in-process wall time.",
        "",
        "| variant | concurrency | requests | in-process tok/s | served tok/s | p50 s | p95 s | overhead | "
        "openai backend tok/s | its overhead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['concurrency']} | {r['requests']} | {r['in_process_tok_s']:.1f} | "
            f"{r['served_tok_s']:.1f} | {r['served_p50_s']:.2f} | {r['served_p95_s']:.2f} | "
            f"{r['overhead']:.2f}x | {r['openai_backend_tok_s']:.1f} | {r['openai_backend_overhead']:.2f}x |"
        )
    save_section(out, "serve", {"machine": info, "args": vars(args), "rows": rows}, "\n".join(lines))
    command = "uv run python packages/core/bench/serve.py " + " ".join(sys.argv[1:])
    write_text(
        out / "README.md",
        f"# {args.label}\n\nCommand: `{command}`\n\nDate: {time.strftime('%Y-%m-%d')}\n\n"
        f"{machine_line(info)}\n\nSee `results.md` for the table.\n",
    )


if __name__ == "__main__":
    main()
