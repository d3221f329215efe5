"""Does leanlm's packed (GPTQ-v2 layout) export load in GPTQModel, and reproduce leanlm's logits?

GPTQModel is not a workspace dependency (it pins numpy/transformers/datasets ranges and pulls build tools),
so this script installs it on first use into a bench-only folder (``~/.cache/leanlm/bench-venvs/
gptqmodel-target``: the sdist built without CUDA extensions plus its few pure-Python extras, ``--no-deps``)
that is put on ``PYTHONPATH`` of a child process running the workspace's own torch and transformers.

For each bit width: export round-to-nearest g64 codes of the embedded model with ``export_packed``
(fp16 scales), compute leanlm's logits on a fixed held-out prompt (fp32, exact dequantize-matmul), load
the folder with ``GPTQModel.load(folder, device="cpu")`` in the child and compare its fp32 logits.
Writes ``results/<label>/results.{json,md}`` (section ``gptq_interop``).

    OMP_NUM_THREADS=1 uv run python packages/bitdistiller/bench/gptq_interop.py --label cpu-2core-shared
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
PACKAGES = ["gptqmodel==7.7.0", "pypcre", "device-smi", "tokenicer", "logbar", "defuser", "torchao"]

CHILD = r"""
import json, sys, torch
job = json.loads(sys.stdin.read())
out = {}
try:
    from gptqmodel import GPTQModel
    m = GPTQModel.load(job["folder"], device="cpu", dtype=torch.float32)
    ids = torch.tensor([job["ids"]])
    with torch.no_grad():
        logits = m(input_ids=ids).logits.float()
    torch.save(logits, job["out"])
    out["ok"] = True
    out["kernel"] = sorted({type(x).__name__ for x in m.modules()
                            if type(x).__module__.startswith("gptqmodel.nn_modules")})
except Exception as e:  # report what failed, in one line
    out = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}"}
print(json.dumps(out))
"""


def ensure_gptqmodel() -> Path:
    probe = subprocess.run([sys.executable, "-c", "import gptqmodel"], env=dict(os.environ, PYTHONPATH=str(TARGET)),
                           capture_output=True)  # fmt: skip
    if probe.returncode == 0:
        return TARGET
    print(
        f"[gptqmodel] installing {PACKAGES[0]} (sdist, no CUDA extensions) into {TARGET} ...", file=sys.stderr
    )
    uv = shutil.which("uv")
    env = dict(os.environ, BUILD_CUDA_EXT="0", CUDA_VISIBLE_DEVICES="")
    # --no-config: the workspace's override-dependencies must not apply to this separate folder
    subprocess.run([uv, "pip", "install", "--no-config", "--python", sys.executable, "--target", str(TARGET),
                    "--no-deps", "--no-build-isolation", *PACKAGES], check=True, env=env, cwd=TARGET.parent)  # fmt: skip
    return TARGET


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--bits", default="4,2")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds for each GPTQModel child")
    args = ap.parse_args()

    import torch

    from leanlm.bitdistiller.export import export_packed
    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.core.bench_report import save_section
    from leanlm.core.evaluation import heldout_texts
    from leanlm.core.models import load_model, load_tokenizer

    target = ensure_gptqmodel()
    out_dir = HERE / "results" / args.label
    work = out_dir / ".work" / "gptq"
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer("default")
    ids = tok(heldout_texts("text", "test")[0][:400]).input_ids[:64]
    rows = {}
    for bits in (int(b) for b in args.bits.split(",")):
        spec = QuantSpec("int", bits, 64)
        folder = work / f"int{bits}-g64"
        if not (folder / "model.safetensors").exists():
            export_packed(
                quantize_model(load_model("default", device="cpu", dtype="fp32"), spec), tok, folder, spec
            )
        ours = load_model(str(folder), device="cpu", dtype="fp32")
        with torch.no_grad():
            ref = ours(input_ids=torch.tensor([ids])).logits.float()
        job = {"folder": str(folder), "ids": ids, "out": str(work / f"gptq_logits_int{bits}.pt")}
        t = time.time()
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(job), text=True,
                                  capture_output=True, env=dict(os.environ, PYTHONPATH=str(target)),
                                  timeout=args.timeout)  # fmt: skip
            lines = [x for x in proc.stdout.strip().splitlines() if x.startswith("{")]
            err = " ".join(proc.stderr.strip().splitlines()[-1:])
            res = json.loads(lines[-1]) if lines else {"ok": False, "error": err}
        except subprocess.TimeoutExpired as e:
            tail = (e.stderr or b"")[-300:]
            res = {
                "ok": False,
                "error": f"GPTQModel.load did not finish in {args.timeout} s; stderr tail: {tail!r}",
            }
        res["seconds"] = time.time() - t
        if res.get("ok"):
            got = torch.load(job["out"])
            res["max_abs_diff"] = float((got - ref).abs().max())
            res["ref_max_abs"] = float(ref.abs().max())
            res["argmax_agreement"] = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
        rows[f"int{bits}-g64"] = res
        print(f"int{bits}: {res}", flush=True)
    lines = [
        "GPTQModel 7.7.0 (bench-only install, CPU) loading leanlm's packed export (`GPTQModel.load(folder, "
        "device='cpu')`), logits on a 64-token held-out prompt vs leanlm's own fp32 logits of the same folder:",
        "",
        "| export | loads | max abs diff | largest logit | top-1 agreement | note |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in rows.items():
        if r.get("ok"):
            lines.append(f"| {k} | yes ({', '.join(r['kernel'])}) | {r['max_abs_diff']:.2e} | {r['ref_max_abs']:.1f} | "
                         f"{r['argmax_agreement']:.3f} | |")  # fmt: skip
        else:
            lines.append(f"| {k} | no | - | - | - | {r['error']} |")
    save_section(out_dir, "gptq_interop", {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                 "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
