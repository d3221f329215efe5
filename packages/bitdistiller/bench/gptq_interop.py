"""Do leanlm's packed (GPTQ-v2 layout) exports load in transformers and GPTQModel, and reproduce leanlm's logits?

GPTQModel and optimum are not workspace dependencies (GPTQModel pins numpy/transformers/datasets ranges and
pulls build tools), so this script installs them on first use into a bench-only folder (``~/.cache/leanlm/
bench-venvs/gptqmodel-target``: GPTQModel's sdist built without CUDA extensions, optimum, and GPTQModel's few
pure-Python extras, all ``--no-deps``) that is put on ``PYTHONPATH`` of a child process running the
workspace's own torch and transformers.

For each bit width: export round-to-nearest g64 codes of the embedded model with ``export_packed`` (fp16
scales), compute leanlm's logits of that folder on a fixed 64-token held-out prompt in fp32 (exact
dequantize-matmul), fp16 (the same in fp16) and bf16 (PyTorch's int4 kernel), then in one child per bit
width load the folder with each loader below and compare its logits with leanlm's at the same dtype:

* ``transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=...)`` (optimum + GPTQModel underneath)
* ``gptqmodel.GPTQModel.load(folder, device="cpu", dtype=...)`` with its automatic kernel choice

Why fp32 ``GPTQModel.load`` of a 4-bit export is wrong: of GPTQModel 7.7's CPU kernels only
``TorchFusedLinear`` accepts fp32, so ``backend=auto`` picks it, and its CPU path replaces the zero-points
by zeros (``transform_cpu``: ``qzeros = zeros_like(scales)``), which is right for symmetric GPTQ only; for
2/3 bits ``GPTQModel.load`` refuses fp32 (``TorchLinear`` takes fp16/bf16 only). The row is kept to show it.

Writes ``results/<label>/results.{json,md}`` (section ``gptq_interop``).

    OMP_NUM_THREADS=1 uv run python packages/bitdistiller/bench/gptq_interop.py --label cpu-2core-epyc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = Path.home() / ".cache/leanlm/bench-venvs/gptqmodel-target"
PACKAGES = [
    "gptqmodel==7.7.0",
    "optimum==2.3.0",
    "pypcre",
    "device-smi",
    "tokenicer",
    "logbar",
    "defuser",
    "torchao",
]
# (loader, dtype): each row compares with leanlm's logits at that dtype
LOADERS = [
    ("transformers", "fp32"),
    ("transformers", "fp16"),
    ("gptqmodel", "fp16"),
    ("gptqmodel", "bf16"),
    ("gptqmodel", "fp32"),
]

CHILD = r"""
import json, sys, torch
job = json.loads(sys.stdin.read())
dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ids = torch.tensor([job["ids"]])
for loader, dt in job["loaders"]:
    out = {"loader": loader, "dtype": dt}
    try:
        if loader == "transformers":
            from transformers import AutoModelForCausalLM
            m = AutoModelForCausalLM.from_pretrained(job["folder"], dtype=dtypes[dt], device_map="cpu")
        else:
            from gptqmodel import GPTQModel
            m = GPTQModel.load(job["folder"], device="cpu", dtype=dtypes[dt])
        with torch.no_grad():
            logits = m(input_ids=ids).logits.float()
        path = f"{job['out']}_{loader}_{dt}.pt"
        torch.save(logits, path)
        out |= {"ok": True, "logits": path,
                "kernel": sorted({type(x).__name__ for x in m.modules() if "gptqmodel" in type(x).__module__})}
        del m
    except Exception as e:  # report what failed, in one line
        out |= {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    print(json.dumps(out), flush=True)
"""


def ensure_loaders() -> Path:
    env = dict(os.environ, PYTHONPATH=str(TARGET))
    probe = subprocess.run(
        [sys.executable, "-c", "import gptqmodel, optimum.gptq"], env=env, capture_output=True
    )
    if probe.returncode == 0:
        return TARGET
    print(
        f"[gptq] installing {', '.join(PACKAGES[:2])} (sdist, no CUDA extensions) into {TARGET} ...",
        file=sys.stderr,
    )
    uv = shutil.which("uv")
    env = dict(os.environ, BUILD_CUDA_EXT="0", CUDA_VISIBLE_DEVICES="")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    # --no-config: the workspace's override-dependencies must not apply to this separate folder
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-config",
            "--python",
            sys.executable,
            "--target",
            str(TARGET),
            "--no-deps",
            "--no-build-isolation",
            *PACKAGES,
        ],
        check=True,
        env=env,
        cwd=TARGET.parent,
    )
    return TARGET


def versions(target: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
        "('gptqmodel', 'optimum', 'transformers', 'torch')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(target)),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(got, ref, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}max_abs_diff": float((got - ref).abs().max()),
        f"{prefix}ref_max_abs": float(ref.abs().max()),
        f"{prefix}argmax_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
    }


def run_child(job: dict, target: Path, timeout: int) -> list[dict]:
    """All loaders of one export in one child process (imports paid once); one dict per loader."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD],
            input=json.dumps(job),
            text=True,
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(target)),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return [{"loader": "child", "dtype": "-", "ok": False, "error": f"did not finish in {timeout} s"}]
    results = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return results or [
        {
            "loader": "child",
            "dtype": "-",
            "ok": False,
            "error": " ".join(proc.stderr.strip().splitlines()[-1:]),
        }
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument(
        "--timeout", type=int, default=1200, help="seconds for each child (all loaders of one export)"
    )
    args = ap.parse_args()

    import torch

    from leanlm.bitdistiller.export import export_packed
    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.core.bench_report import machine_info, save_section
    from leanlm.core.evaluation import heldout_texts
    from leanlm.core.models import load_model, load_tokenizer

    info = machine_info()
    print(json.dumps(info), flush=True)
    target = ensure_loaders()
    vers = versions(target)
    out_dir = HERE / "results" / args.label
    work = out_dir / ".work" / "gptq"
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer("default")
    ids = tok(heldout_texts("text", "test")[0][:400]).input_ids[:64]
    rows: dict[str, list[dict]] = {}
    own_rows: dict[str, dict] = {}
    t_all = time.time()
    for bits in (int(b) for b in args.bits.split(",")):
        spec = QuantSpec("int", bits, 64)
        folder = work / f"int{bits}-g64"
        if not (folder / "model.safetensors").exists():
            export_packed(
                quantize_model(load_model("default", device="cpu", dtype="fp32"), spec), tok, folder, spec
            )
        refs = {}
        for dt in ("fp32", "fp16", "bf16"):
            ours = load_model(str(folder), device="cpu", dtype=dt)
            with torch.no_grad():
                refs[dt] = ours(input_ids=torch.tensor([ids])).logits.float()
            del ours
        # leanlm's own 16-bit logits against its exact fp32 ones: the rounding a 16-bit loader may also show
        own_rows[f"int{bits}-g64"] = {dt: compare(refs[dt], refs["fp32"]) for dt in ("fp16", "bf16")}
        job = {"folder": str(folder), "ids": ids, "out": str(work / f"logits_int{bits}"), "loaders": LOADERS}
        cached = work / f"child_int{bits}.json"
        t = time.time()
        if cached.exists():  # the loaders' logits from an earlier run on the same export
            results = json.loads(cached.read_text())
        else:
            results = run_child(job, target, args.timeout)
            if any(r.get("ok") for r in results):
                cached.write_text(json.dumps(results))
        for r in results:
            if r.get("ok"):
                got = torch.load(r["logits"])
                r |= compare(got, refs[r["dtype"]]) | compare(got, refs["fp32"], "fp32_")
            print(f"int{bits}: {r}", flush=True)
        rows[f"int{bits}-g64"] = results
        print(f"int{bits}: child {time.time() - t:.0f} s", flush=True)
    lines = [
        f"leanlm's packed export (RTN g64 of the embedded model, fp16 scales) loaded by transformers {vers['transformers']}"
        f" + optimum {vers['optimum']} + GPTQModel {vers['gptqmodel']} (bench-only install, CPU, torch {vers['torch']}); "
        "logits on a 64-token held-out prompt vs leanlm's own logits of the same folder at the same dtype "
        "(fp32 and fp16: exact dequantize-matmul; bf16: PyTorch's int4 kernel) and vs leanlm's fp32 logits. "
        "'leanlm itself' rows: leanlm's fp16/bf16 logits vs its own fp32 ones, the rounding any 16-bit run shows "
        "(large on the RTN int2 model, whose perplexity is in the hundreds of thousands). "
        f"{info['cpu']}, {info['cores']} cores.",
        "",
        "| export | loader | dtype | loads | kernel | max abs diff (same dtype) | top-1 (same dtype) | "
        "max abs diff vs leanlm fp32 | top-1 vs leanlm fp32 | largest logit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, rs in rows.items():
        for dt, o in own_rows[k].items():
            lines.append(
                f"| {k} | leanlm itself | {dt} | yes | {'int4pack' if dt == 'bf16' else 'exact'} | - | - | "
                f"{o['max_abs_diff']:.2e} | {o['argmax_agreement']:.3f} | {o['ref_max_abs']:.1f} |"
            )
        for r in rs:
            call = (
                "AutoModelForCausalLM.from_pretrained"
                if r["loader"] == "transformers"
                else "GPTQModel.load"
                if r["loader"] == "gptqmodel"
                else r["loader"]
            )
            if r.get("ok"):
                lines.append(
                    f"| {k} | {call} | {r['dtype']} | yes | {', '.join(r['kernel'])} | {r['max_abs_diff']:.2e} | "
                    f"{r['argmax_agreement']:.3f} | {r['fp32_max_abs_diff']:.2e} | "
                    f"{r['fp32_argmax_agreement']:.3f} | {r['fp32_ref_max_abs']:.1f} |"
                )
            else:
                lines.append(
                    f"| {k} | {call} | {r['dtype']} | no: {r['error'][:160]} | - | - | - | - | - | - |"
                )
    result = {
        "rows": rows,
        "leanlm_16bit_vs_fp32": own_rows,
        "versions": vers,
        "machine": info,
        "wall_s": time.time() - t_all,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    save_section(out_dir, "gptq_interop", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
