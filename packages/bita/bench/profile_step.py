"""Per-step cost of BiTA decoding vs a greedy KV-cache step (embedded model, CPU, 1 thread).

    OMP_NUM_THREADS=1 uv run python packages/bita/bench/profile_step.py [--adapter DIR] [--trees "1,1;3,2,1"] [--threads 1]

Times (median of ``--reps``) for a context of ``--ctx`` tokens:

* ``greedy``: one base-model forward of 1 token against a DynamicCache, plus the LM head and argmax
  (what HF ``generate`` does per token, without its Python overhead);
* ``hf_generate``: per-token time of ``generate(do_sample=False)`` (KV cache), the real baseline;
* ``bita[tree]``: one full decoding step: (``BiTADecoder.generate`` time minus greedy's prefill
  time) / (forwards - 1) over a run with no EOS, so it includes input construction, forward,
  LM head, verification, drafts and cache compaction (the prefill estimate is approximate).

From the step cost c (in greedy steps) it derives the mean accepted tokens a tree needs to break
even (c) and to reach 1.3x (1.3 c), next to the most it can accept (depth + 1). Writes the table
to ``step_cost/results.{json,md}`` next to this file (key ``step_cost_<threads>t``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--trees", default="1,1;1,1,1;3,2,1")
    ap.add_argument("--ctx", type=int, default=120)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one BiTA run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "step_cost"))
    args = ap.parse_args()

    import torch

    from leanlm.bita.decoding import BiTADecoder
    from leanlm.bita.model import BiTAConfig, BiTAModel, load_bita
    from leanlm.core.models import load_model

    torch.set_num_threads(args.threads)
    base = load_model("default", device="cpu")
    model = (
        load_bita(args.adapter, base=base)
        if args.adapter
        else BiTAModel(base, BiTAConfig(prefix_dropout=0.0))
    )
    model.eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 40000, (args.ctx,), generator=g).tolist()
    x = torch.tensor([prompt])

    def med(f):
        ts = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            r = f()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts), r

    # greedy step: raw forward of one token with a cache
    with torch.no_grad():
        out = base(x, use_cache=True)
        cache = out.past_key_values

        def one_step():
            o = base(torch.tensor([[5]]), past_key_values=cache, use_cache=True)
            cache.crop(-1)
            return int(o.logits[0, -1].argmax())

        for _ in range(3):
            one_step()
        greedy_s, _ = med(one_step)

        def hf():
            return base.generate(
                x,
                attention_mask=torch.ones_like(x),
                do_sample=False,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                pad_token_id=0,
            )

        hf()
        hf_s, _ = med(hf)
        hf_prefill, _ = med(
            lambda: base.generate(
                x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=1, pad_token_id=0
            )
        )
        hf_step = (hf_s - hf_prefill) / (args.tokens - 1)
    print(
        f"greedy raw step {1e3 * greedy_s:.2f} ms; hf_generate per token {1e3 * hf_step:.2f} ms "
        f"(prefill {1e3 * hf_prefill:.1f} ms)"
    )
    rows = []
    for spec in args.trees.split(";"):
        dec = BiTADecoder(model, spec)
        dec.generate(prompt, 8)
        ts = []
        for _ in range(args.reps):
            r = dec.generate(prompt, args.tokens)
            ts.append((r.seconds - hf_prefill) / max(1, r.forwards - 1))
        step = statistics.median(ts)
        print(
            f"bita[{dec.tree.label()}] q={dec.layout.q}: step {1e3 * step:.2f} ms = "
            f"{step / greedy_s:.2f}x raw greedy, {step / hf_step:.2f}x hf_generate step; "
            f"mean accepted {r.mean_accepted:.2f}"
        )
        cost = step / hf_step
        rows.append(
            {
                "tree": dec.tree.label(),
                "q": dec.layout.q,
                "step_ms": 1e3 * step,
                "cost_vs_greedy_step": cost,
                "accepted_for_1x": cost,
                "accepted_for_1.3x": 1.3 * cost,
                "max_accepted": len(dec.tree.widths) + 1,
                "mean_accepted_this_adapter": r.mean_accepted,
            }
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                dec.generate(prompt, args.tokens)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    from leanlm.core.bench_report import save_section

    lines = [
        f"## Step cost, {args.threads} thread(s), context {args.ctx}",
        "",
        f"HF generate greedy step {1e3 * hf_step:.1f} ms (raw forward {1e3 * greedy_s:.1f} ms), median of {args.reps}.",
        "",
        "| tree | tokens per step | step ms | cost (greedy steps) | accepted for 1.0x | for 1.3x | most possible |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['tree']} | {r['q']} | {r['step_ms']:.1f} | {r['cost_vs_greedy_step']:.2f} | "
            f"{r['accepted_for_1x']:.2f} | {r['accepted_for_1.3x']:.2f} | {r['max_accepted']} |"
            for r in rows
        ),
    ]
    result = {
        "settings": vars(args),
        "greedy_step_ms": 1e3 * hf_step,
        "raw_step_ms": 1e3 * greedy_s,
        "rows": rows,
    }
    save_section(args.out, f"step_cost_{args.threads}t", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
