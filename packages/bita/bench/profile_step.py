"""Per-step cost of BiTA decoding in greedy steps, before (HF engine) and after (fast engine).

    OMP_NUM_THREADS=1 uv run python packages/bita/bench/profile_step.py [--adapter DIR] \
        [--ctx 128,8000] [--trees "1;1-1;1-1-1;3-2-1"] [--threads 1] [--label NAME]

For each context length the context's keys/values are computed ONCE by the base model and copied
into every variant's cache, then single decoding steps are timed **interleaved** (round r runs one
step of every variant, in a rotated order) and each variant's median is reported:

* ``greedy_hf``: one base-model forward of 1 token against a ``DynamicCache`` + LM head + argmax:
  what HF ``generate`` (the bita-eval baseline) does per token;
* ``greedy_prealloc``: the fast engine's own layer loop on 1 token with the preallocated buffer
  (what greedy would cost with the same machinery);
* ``bita[tree] hf``: a full BiTA step on the previous path (DynamicCache, one additive mask over
  every key, ``index_select`` of the whole cache when tokens are accepted);
* ``bita[tree] fast``: the same step on the preallocated buffer (fused unmasked SDPA over the
  context + masked attention over prefix and step tokens, only accepted rows copied).

A BiTA step advances its own generation (it really accepts tokens), so contexts grow by a few
tokens over a run; with a random prompt and an untrained adapter almost nothing is accepted.
Step cost c = median step / median ``greedy_hf`` step; a tree needs c accepted tokens per forward
to break even. Writes ``results.{json,md}`` under ``--out``/``--label``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def machine() -> dict:
    import torch

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if "model name" in line), "?")
    return {
        "cpu": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx": "amx_tile" in flags,
        "torch_threads": torch.get_num_threads(),
        "load_avg_start": os.getloadavg()[0],
    }


def measure(model, base, ctx: int, trees: list[str], rounds: int) -> list[dict]:
    """Interleaved single-step medians of every variant at one context length."""
    import torch
    from transformers import DynamicCache

    from leanlm.bita.decoding import BiTADecoder
    from leanlm.bita.trees import StepTree

    results: list[dict] = []
    g = torch.Generator().manual_seed(ctx)
    prompt = torch.randint(0, 40000, (ctx,), generator=g).tolist()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = base(torch.tensor([prompt[:-1]]), use_cache=True)
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    del out
    prefill_s = time.perf_counter() - t0
    print(f"ctx {ctx}: context K/V in {prefill_s:.1f} s")
    n = ctx - 1

    steppers = {}

    # greedy as HF generate runs it: DynamicCache (grows by concatenation), 1 token, LM head, argmax
    gcache = DynamicCache(config=base.config)
    for i, (k, v) in enumerate(kv):
        gcache.update(k.clone(), v.clone(), i)
    gstate = {"tok": prompt[-1], "pos": n}

    def greedy_hf(gcache=gcache, gstate=gstate):
        o = base(
            torch.tensor([[gstate["tok"]]]),
            past_key_values=gcache,
            position_ids=torch.tensor([[gstate["pos"]]]),
            use_cache=True,
        )
        gstate["tok"], gstate["pos"] = int(o.logits[0, -1].argmax()), gstate["pos"] + 1

    steppers["greedy_hf"] = greedy_hf

    def make_bita(spec: str, engine: str):
        dec = BiTADecoder(model, spec, engine=engine)
        st = dec.start(prompt, max_new_tokens=400)
        if engine == "fast":
            buf = dec.engine.buf
            for i, (k, v) in enumerate(kv):
                buf[i, 0, :, model.num_prefix : model.num_prefix + n] = k[0]
                buf[i, 1, :, model.num_prefix : model.num_prefix + n] = v[0]
        else:
            for layer, (k, v) in zip(dec.engine.cache.layers, kv, strict=True):
                layer.keys = torch.cat([layer.keys, k], dim=2)
                layer.values = torch.cat([layer.values, v], dim=2)
        dec.engine.n = n
        dec.step(st)  # the first step: root + one group (drafts for the next)
        return dec, st

    decs = {}
    for spec in trees:
        for engine in ("hf", "fast"):
            dec, st = make_bita(spec, engine)
            name = f"bita[{dec.tree.label()}] {engine}"
            decs[name] = dec
            steppers[name] = lambda dec=dec, st=st: dec.step(st)

    # greedy with the preallocated buffer and the same layer loop: a 1-token "tree" without masks
    pdec, pst = make_bita("1", "fast")
    lone = StepTree([-1], 0)
    empty = torch.zeros(0, dtype=torch.long)
    no_masks = torch.zeros(0, dtype=torch.long)
    pstate = {"tok": prompt[-1]}

    def greedy_prealloc(eng=pdec.engine, pstate=pstate):
        h = eng.run(empty, pstate["tok"], empty, no_masks, lone)
        pstate["tok"] = int(model.logits(h)[0].argmax())
        eng.accept([])

    steppers["greedy_prealloc"] = greedy_prealloc

    names = list(steppers)
    times: dict[str, list[float]] = {k: [] for k in names}
    with torch.no_grad():
        for name in names:  # warm-up
            steppers[name]()
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                t = time.perf_counter()
                steppers[name]()
                times[name].append(time.perf_counter() - t)
    greedy = statistics.median(times["greedy_hf"])
    for name in names:
        med = statistics.median(times[name])
        row = {
            "ctx": ctx,
            "variant": name,
            "q": decs[name].layout.q if name in decs else 1,
            "step_ms": 1e3 * med,
            "min_ms": 1e3 * min(times[name]),
            "max_ms": 1e3 * max(times[name]),
            "cost_greedy_steps": med / greedy,
            "rounds": rounds,
        }
        results.append(row)
        print(
            f"ctx {ctx:5d} {name:22s} q={row['q']:3d} median {row['step_ms']:7.1f} ms "
            f"(min {row['min_ms']:.1f}, max {row['max_ms']:.1f}) = {row['cost_greedy_steps']:.2f} greedy steps"
        )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--trees", default="1;1-1;1-1-1;3-2-1")
    ap.add_argument("--long-trees", default="1;1-1", help="trees timed at contexts above 1000")
    ap.add_argument("--ctx", default="128,8000")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds at short contexts")
    ap.add_argument("--long-rounds", type=int, default=5, help="rounds at contexts above 1000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--label", default="step_cost")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    import torch

    from leanlm.bita.model import BiTAConfig, BiTAModel, load_bita
    from leanlm.core.models import load_model
    from leanlm.core.records import write_json, write_text

    torch.set_num_threads(args.threads)
    base = load_model("default", device="cpu")
    model = (
        load_bita(args.adapter, base=base)
        if args.adapter
        else BiTAModel(base, BiTAConfig(prefix_dropout=0.0))
    )
    model.eval()
    info = machine()
    print(info)
    results = []
    for ctx in [int(c) for c in args.ctx.split(",")]:
        long = ctx > 1000
        trees = (args.long_trees if long else args.trees).split(";")
        results += measure(model, base, ctx, trees, args.long_rounds if long else args.rounds)
    info["load_avg_end"] = os.getloadavg()[0]
    out = Path(args.out) / args.label
    write_json(out / "results.json", {"settings": vars(args), "machine": info, "rows": results})
    lines = [
        f"# BiTA step cost, {args.threads} thread(s), fp32",
        "",
        f"Machine: {info['cpu']}, capability {info['cpu_capability']}, AMX {'yes' if info['amx'] else 'no'}; "
        f"load average {info['load_avg_start']:.1f} at start, {info['load_avg_end']:.1f} at end (shared machine).",
        "Interleaved single steps, medians; cost in HF greedy steps (`greedy_hf` = 1.00).",
        "",
        "| context | variant | tokens per step | median ms | min-max ms | cost (greedy steps) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['ctx']} | {r['variant']} | {r['q']} | {r['step_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} | "
            f"{r['cost_greedy_steps']:.2f} |"
            for r in results
        ),
    ]
    write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
