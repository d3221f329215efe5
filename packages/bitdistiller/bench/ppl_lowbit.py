"""BitDistiller benchmark on the embedded SmolLM2-135M: perplexity of FP / RTN / clip / clip+KD-QAT, peers, size, speed.

    python packages/bitdistiller/bench/ppl_lowbit.py            # reduced scale (defaults), ~10 min on a shared CPU
    python packages/bitdistiller/bench/ppl_lowbit.py --qat-steps 200 --teacher-samples 512 ...   # larger

Perplexity: GPTQ style on the fixed held-out "test" split of the offline Shakespeare text; calibration
and teacher prompts come from the disjoint "calib" side. Peers: HQQ (HQQLinear) and optimum-quanto
(qint2/qint4 weights; no 3-bit type) at the same bits and group size; quanto is evaluated under
``torch.no_grad`` (its frozen weights fail under ``inference_mode``). Writes results.json and results.md to
``bench/results/<label>/`` (``--label``, default ``cpu``; ``--out`` names another folder).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

HERE = Path(__file__).parent


def quantize_peer(fp: nn.Module, peer: str, bits: int, group: int) -> nn.Module:
    m = copy.deepcopy(fp)
    if peer == "hqq":
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        cfg = BaseQuantizeConfig(nbits=bits, group_size=group)
        for name, lin in list(m.named_modules()):
            if isinstance(lin, nn.Linear) and not name.endswith("lm_head"):
                parent, _, child = name.rpartition(".")
                q = HQQLinear(lin, quant_config=cfg, compute_dtype=torch.float32, device="cpu")
                setattr(m.get_submodule(parent), child, q)
        return m
    from optimum.quanto import freeze, qint2, qint4, quantize
    from optimum.quanto.nn import QModuleMixin

    wtype = {2: qint2, 4: qint4}.get(bits)
    if wtype is None:
        raise ValueError(f"optimum-quanto has no {bits}-bit weight type (qint2, qint4, qint8 only)")
    # quanto has no group-size argument: it picks 128 (or the largest multiple of 32 below that divides
    # in_features) at module creation; set our group size on every quantized module before freezing
    quantize(m, weights=wtype, exclude=["lm_head"])
    for mod in m.modules():
        if isinstance(mod, QModuleMixin) and mod.weight_group_size is not None:
            mod.weight_group_size = group
    freeze(m)
    return m


def tokens_per_second(model: nn.Module, tok: Any, new_tokens: int) -> float:
    ids = tok("To be, or not to be, that is the question:", return_tensors="pt")
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, do_sample=False)  # warm-up
        t = time.perf_counter()
        out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        dt = time.perf_counter() - t
    return (out.shape[1] - ids["input_ids"].shape[1]) / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", default="int2,int3,nf3", help="comma list of int2,int3,int4,nf3")
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--calib-seqlen", type=int, default=256)
    p.add_argument("--n-grid", type=int, default=10)
    p.add_argument("--teacher-samples", type=int, default=32)
    p.add_argument("--teacher-tokens", type=int, default=96)
    p.add_argument("--qat-steps", type=int, default=16)
    p.add_argument("--qat-configs", default="int2", help="configs that also get KD-QAT")
    p.add_argument("--qat-batch", type=int, default=4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument(
        "--init-checkpoint",
        default=None,
        help="a Trainer checkpoint-N folder of an earlier QAT run (same config) to continue from: "
        "copied into this run's QAT folder when that has no checkpoint yet",
    )
    p.add_argument("--ppl-seqlen", type=int, default=256)
    p.add_argument("--ppl-chunks", type=int, default=16)
    p.add_argument("--speed-tokens", type=int, default=32)
    p.add_argument("--label", default="cpu", help="results go to bench/results/<label>/")
    p.add_argument("--out", default=None, help="folder instead of bench/results/<label>/")
    p.add_argument("--work", default=str(HERE / ".work"))
    a = p.parse_args()
    a.out = a.out or str(HERE / "results" / a.label)

    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.clip import apply_clip, calibration_blocks, run_clip_search, save_clip
    from leanlm.bitdistiller.export import export_packed, load_packed, packed_sizes
    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.options import GenerateOptions, TrainOptions
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.bitdistiller.teacher import generate_teacher_data
    from leanlm.bitdistiller.train import train
    from leanlm.core.evaluation import heldout_texts, perplexity
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.records import write_json, write_jsonl, write_text

    t_start = time.time()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    fp, tok = load_model("default", device="cpu"), load_tokenizer("default")
    test_texts = heldout_texts("text", "test")
    calib_texts = heldout_texts("text", "calib")

    def ppl(m: nn.Module, inference_mode: bool = True) -> float:
        res = perplexity(
            m, tok, test_texts, seqlen=a.ppl_seqlen, max_chunks=a.ppl_chunks, inference_mode=inference_mode
        )
        value = round(res["ppl"], 2)
        write_json(Path(a.out) / "results.json", results)  # partial results survive an interrupted run
        return value

    results: dict[str, Any] = {"scale": vars(a), "rows": [], "notes": [], "size": {}, "speed": {}}
    rows = results["rows"]
    rows.append({"config": "fp32", "method": "full precision", "ppl": ppl(fp)})
    # teacher prompts from the calib side only (the held-out test texts never reach training)
    prompts = work / "teacher_prompts.jsonl"
    write_jsonl(prompts, [{"id": f"c{i}", "text": t} for i, t in enumerate(calib_texts) if len(t) > 512])
    teacher = None
    blocks = calibration_blocks(tok, calib_texts, a.calib_samples, a.calib_seqlen)
    for cfg in a.configs.split(","):
        qt, bits = ("nf3", 3) if cfg == "nf3" else ("int", int(cfg[3:]))
        spec = QuantSpec(qt, bits, a.group_size)
        rtn = quantize_model(copy.deepcopy(fp), spec)
        rows.append({"config": spec.name, "method": "RTN", "ppl": ppl(rtn)})
        del rtn
        t = time.time()
        # cached files are named by every setting that shapes them, so a re-run with other flags never
        # reuses (or resumes from) a file made with different ones
        clip_path = work / f"clip_{spec.name}_c{a.calib_samples}x{a.calib_seqlen}_grid{a.n_grid}.pt"
        if not clip_path.exists():  # reused on a re-run with the same --work folder and settings
            save_clip(clip_path, run_clip_search(copy.deepcopy(fp), blocks, spec, n_grid=a.n_grid), spec, fp)
        clipped = quantize_model(copy.deepcopy(fp), spec)
        apply_clip(clipped, clip_path, spec)
        rows.append(
            {"config": spec.name, "method": "clip", "ppl": ppl(clipped), "seconds": round(time.time() - t)}
        )
        del clipped
        if cfg in a.qat_configs.split(","):
            if teacher is None:
                t = time.time()
                answers = GenerateOptions(
                    dataset=str(prompts),
                    max_sample=a.teacher_samples,
                    max_new_tokens=a.teacher_tokens,
                    output=str(work / f"teacher_n{a.teacher_samples}_t{a.teacher_tokens}.jsonl"),
                )
                teacher = generate_teacher_data(answers)
                results["teacher_seconds"] = round(time.time() - t)
            t = time.time()
            qat_dir = (
                work
                / f"qat_{spec.name}_n{a.teacher_samples}_s{a.qat_steps}_b{a.qat_batch}_lr{a.lr:g}_len{a.max_length}"
            )
            if a.init_checkpoint and not list(qat_dir.glob("checkpoint-*")):
                src = Path(a.init_checkpoint)
                if not (src / "trainer_state.json").exists():
                    raise SystemExit(
                        f"--init-checkpoint {src}: not a Trainer checkpoint (no trainer_state.json)"
                    )
                # the Trainer resumes from the copy: weights, optimizer state, step counter
                shutil.copytree(src, qat_dir / src.name)
            qat_config = TrainOptions(
                teacher["path"],
                str(qat_dir),
                clip=str(clip_path),
                quant_type=qt,
                w_bit=bits,
                group_size=a.group_size,
                max_length=a.max_length,
                gamma_batches=4,
                dtype="fp32",
                learning_rate=a.lr,
                batch_size=a.qat_batch,
                grad_accum=1,
                max_steps=a.qat_steps,
                save_steps=a.qat_steps,
                logging_steps=1,
            )
            summary = train(qat_config, spec)
            qat, _, _ = load_model_for_eval(summary["final"], device="cpu")
            rows.append(
                {
                    "config": spec.name,
                    "method": f"clip + KD-QAT (CAKLD, {summary['steps']} steps)",
                    "ppl": ppl(qat),
                    "seconds": round(time.time() - t),
                    "gamma": round(summary["gamma"], 4),
                }
            )
            if qt == "int":
                sizes = export_packed(qat, tok, work / f"packed_{spec.name}", spec)
                packed, _ = load_packed(work / f"packed_{spec.name}", device="cpu")
                rows.append(
                    {
                        "config": spec.name,
                        "method": "packed export of the QAT model (dequant-matmul)",
                        "ppl": ppl(packed),
                    }
                )
                fp_sizes = packed_sizes(fp)
                lin_fp = sum(
                    m.weight.numel() * 4
                    for n, m in fp.named_modules()
                    if isinstance(m, nn.Linear) and not n.endswith("lm_head")
                )
                results["size"][spec.name] = {
                    "fp32_total_bytes": fp_sizes["total_bytes"],
                    "fp32_linear_bytes": lin_fp,
                    "fp16_linear_bytes": lin_fp // 2,
                    **sizes,
                }
                if "fp32_tok_s" not in results["speed"]:
                    results["speed"]["fp32_tok_s"] = round(tokens_per_second(fp, tok, a.speed_tokens), 2)
                results["speed"][f"packed_{spec.name}_tok_s"] = round(
                    tokens_per_second(packed, tok, a.speed_tokens), 2
                )
                del packed
            del qat
        for peer in ("hqq", "quanto"):
            t = time.time()
            try:
                m = quantize_peer(fp, peer, bits, a.group_size) if qt == "int" else None
                if m is None:
                    raise ValueError(f"{peer} has no NF3 format")
                # quanto's frozen weights need version counters, which inference tensors lack: no_grad
                value = ppl(m, inference_mode=peer != "quanto")
                rows.append(
                    {"config": spec.name, "method": peer, "ppl": value, "seconds": round(time.time() - t)}
                )
                del m
            except Exception as e:  # noqa: BLE001 - a peer failing is a result to report
                rows.append(
                    {
                        "config": spec.name,
                        "method": peer,
                        "ppl": None,
                        "error": f"{type(e).__name__}: {e}"[:200],
                    }
                )
        write_json(Path(a.out) / "results.json", results)  # partial results survive an interrupted run
    results["wall_seconds"] = round(time.time() - t_start)
    results["threads"] = torch.get_num_threads()
    write_json(Path(a.out) / "results.json", results)
    fp_ppl = rows[0]["ppl"]
    md = ["| config | method | ppl | ppl / FP |", "|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ppl'] / fp_ppl:.2f}" if r.get("ppl") else "-"
        md.append(
            f"| {r['config']} | {r['method']} | {r['ppl'] if r.get('ppl') else 'failed: ' + r.get('error', '')} | {ratio} |"
        )
    for name, s in results["size"].items():
        md += [
            "",
            f"Packed {name} linear layers: {s['packed_linear_bytes'] / 2**20:.1f} MiB vs {s['fp16_linear_bytes'] / 2**20:.1f} MiB "
            f"fp16 ({s['fp16_linear_bytes'] / s['packed_linear_bytes']:.1f}x smaller); whole file {s['file_bytes'] / 2**20:.1f} MiB "
            f"(embeddings stay fp32) vs {s['fp32_total_bytes'] / 2**20:.1f} MiB fp32.",
        ]
    if results["speed"]:
        md += [
            "",
            "CPU greedy decoding (batch 1): " + ", ".join(f"{k} {v}" for k, v in results["speed"].items()),
        ]
    md += [
        "",
        f"Scale: {json.dumps(vars(a))}; wall {results['wall_seconds']} s, torch threads {results['threads']}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
    ]
    write_text(Path(a.out) / "results.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
