"""Toy end-to-end BitDistiller on CPU: clip -> teacher data -> a few KD-QAT steps -> perplexity -> GGUF.

int2, g=64 (SmolLM2's 576-wide layers), tiny calibration, 8 teacher answers, 4 QAT steps; the
numbers show the pipeline runs, not the method's quality (see bench/ for that).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanlm.core.demo import DemoResult

if TYPE_CHECKING:
    from torch import nn

    from leanlm.bitdistiller.options import TrainOptions
    from leanlm.bitdistiller.quant import QuantSpec


def _qat_config(model: str, data: str, out: Path, spec: QuantSpec) -> TrainOptions:
    """4 CAKLD steps of 2 examples on the demo's teacher answers, from the clip cache."""
    from leanlm.bitdistiller.options import TrainOptions

    return TrainOptions(
        data=data,
        output_dir=str(out / "qat"),
        model=model,
        clip=str(out / "clip.pt"),
        w_bit=spec.bits,
        group_size=spec.group_size,
        gamma_batches=2,
        max_length=128,
        dtype="fp32",
        learning_rate=2e-5,
        batch_size=2,
        grad_accum=1,
        max_steps=4,
        save_steps=4,
        logging_steps=1,
    )


def _perplexities(fp: nn.Module, tok: Any, spec: QuantSpec, clip: Path, qat: nn.Module) -> dict[str, float]:
    """Held-out perplexity (seqlen 256, 4 chunks) of FP, round-to-nearest, clipped and QAT models."""
    from leanlm.bitdistiller.clip import apply_clip
    from leanlm.bitdistiller.evaluate import ppl
    from leanlm.bitdistiller.modules import quantize_model

    rtn = quantize_model(copy.deepcopy(fp), spec)
    clipped = quantize_model(copy.deepcopy(fp), spec)
    apply_clip(clipped, clip, spec)
    models = {"fp32": fp, "int2 RTN": rtn, "int2 clip": clipped, "int2 clip + KD-QAT (4 steps)": qat}
    return {name: ppl(m, tok, seqlen=256, max_chunks=4)["ppl"] for name, m in models.items()}


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.clip import calibration_blocks, calibration_texts, run_clip_search, save_clip
    from leanlm.bitdistiller.gguf_export import export_gguf
    from leanlm.bitdistiller.options import GenerateOptions
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
    answers = GenerateOptions(
        model, output=str(out / "teacher.jsonl"), max_sample=8, max_new_tokens=48, batch_size=8
    )
    teacher = generate_teacher_data(answers)
    timings["teacher"] = time.time() - t

    t = time.time()
    summary = train(_qat_config(model, teacher["path"], out, spec), spec)
    timings["qat"] = time.time() - t

    t = time.time()
    qat, _, _ = load_model_for_eval(summary["final"], device="cpu")
    rows = _perplexities(fp, tok, spec, out / "clip.pt", qat)
    timings["ppl"] = time.time() - t

    # the QAT model as one GGUF file (exact Q4_1 re-encoding of its int2 codes) that llama.cpp runs
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
    metrics = {"ppl": rows, "gamma": summary["gamma"], "timings": timings, "gguf_bytes": gguf["bytes"]}
    return DemoResult(
        "bitdistiller", ok=True, seconds=time.time() - t0, summary="\n".join(lines), metrics=metrics
    )
