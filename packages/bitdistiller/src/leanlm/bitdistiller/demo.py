"""Toy end-to-end BitDistiller on CPU: clip -> teacher data -> a few KD-QAT steps -> perplexity -> GGUF.

int2, g=64 (SmolLM2's 576-wide layers), tiny calibration, 8 teacher answers, 4 QAT steps; the
numbers show the pipeline runs, not the method's quality (see bench/ for that).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from leanlm.core.demo import DemoResult


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.clip import (
        apply_clip,
        calibration_blocks,
        calibration_texts,
        run_clip_search,
        save_clip,
    )
    from leanlm.bitdistiller.evaluate import ppl
    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.bitdistiller.teacher import generate_teacher_data
    from leanlm.bitdistiller.train import train
    from leanlm.core.models import load_model, load_tokenizer

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = QuantSpec("int", 2, 64)
    fp, tok = load_model(model, device="cpu"), load_tokenizer(model)
    timings: dict[str, float] = {}

    t = time.time()
    blocks = calibration_blocks(tok, calibration_texts("text", limit=200), 2, 256)
    clips = run_clip_search(copy.deepcopy(fp), blocks, spec, n_grid=8)
    save_clip(out / "clip.pt", clips, spec, fp)
    timings["clip"] = time.time() - t

    t = time.time()
    teacher = generate_teacher_data(model, "wikitext", out=out / "teacher.jsonl", max_sample=8, max_new_tokens=48,
                                    batch_size=8)  # fmt: skip
    timings["teacher"] = time.time() - t

    t = time.time()
    summary = train(model, teacher["path"], out / "qat", spec, clip=out / "clip.pt", max_length=128,
                    overrides={"max_steps": 4, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                               "learning_rate": 2e-5, "save_steps": 4, "logging_steps": 1},
                    gamma_batches=2, dtype="fp32")  # fmt: skip
    timings["qat"] = time.time() - t

    t = time.time()
    kw = {"seqlen": 256, "max_chunks": 4}
    rtn = quantize_model(copy.deepcopy(fp), spec)
    clipped = quantize_model(copy.deepcopy(fp), spec)
    apply_clip(clipped, out / "clip.pt", spec)
    qat, _, _ = load_model_for_eval(summary["final"], device="cpu")
    rows = {name: ppl(m, tok, **kw)["ppl"] for name, m in
            (("fp32", fp), ("int2 RTN", rtn), ("int2 clip", clipped), ("int2 clip + KD-QAT (4 steps)", qat))}  # fmt: skip
    timings["ppl"] = time.time() - t

    # the QAT model as one GGUF file (exact Q4_1 re-encoding of its int2 codes) that llama.cpp runs
    from leanlm.bitdistiller.gguf_export import export_gguf

    t = time.time()
    gguf = export_gguf(qat, tok, out / "qat-int2.gguf", spec)
    timings["gguf"] = time.time() - t

    lines = [
        f"{spec.name}: clip search ({len(clips)} layers, {timings['clip']:.0f} s), {teacher['records']} teacher "
        f"answers ({timings['teacher']:.0f} s), {summary['steps']} CAKLD steps (gamma {summary['gamma']:.3f}, "
        f"{timings['qat']:.0f} s); perplexity on held-out Shakespeare, seqlen 256, 4 chunks:",
        "",
        "| model | ppl |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in rows.items()],
        "",
        f"GGUF export (Q4_1, exact): {gguf['gguf']}, {gguf['bytes'] / 2**20:.1f} MiB ({timings['gguf']:.0f} s); "
        "run it with llama.cpp (llama-cli -m FILE).",
    ]
    return DemoResult("bitdistiller", ok=True, seconds=time.time() - t0, summary="\n".join(lines),
                      metrics={"ppl": rows, "gamma": summary["gamma"], "timings": timings,
                               "gguf_bytes": gguf["bytes"]})  # fmt: skip
