"""Lossy GGUF K-quants of leanlm's exact Q4_1 export, made and measured by llama.cpp (bench only).

``bitdistiller-export --format gguf`` writes the QAT codes *exactly* as Q4_1 (5 bits per weight). A smaller
file needs llama.cpp's K-quants (Q2_K: 2.625 bits per weight, Q3_K: 3.4375), which re-fit the weights on their
own grids: **lossy**, not the QAT model any more. The ``gguf`` package (0.19) only dequantizes K-quants
(``gguf.quants.quantize(..., Q2_K)`` raises NotImplementedError), so this script uses llama.cpp's own
quantizer (``llama_model_quantize`` with ``allow_requantize``: Q4_1 -> f32 -> K-quant) in the bench-only
llama-cpp-python venv (``llamacpp_venv.py``), then reports each file's size and its perplexity in llama.cpp on
the same held-out chunks as ``decode_speed.py`` (and 1-thread greedy decode tokens/s), next to the exact Q4_1.

    OMP_NUM_THREADS=1 uv run python packages/bitdistiller/bench/gguf_lossy.py --label cpu-2core-epyc \
      --gguf /tmp/i20/work/qat_int4-g64.gguf
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# llama.cpp's ftype codes (llama.h): what ``llama_model_quantize`` writes
FTYPES = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12}

QUANTIZE = r"""
import json, sys, llama_cpp
job = json.loads(sys.stdin.read())
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.allow_requantize, p.nthread = job["ftype"], True, 1
rc = llama_cpp.llama_model_quantize(job["src"].encode(), job["dst"].encode(), p)
print(json.dumps({"rc": int(rc)}))
"""


def quantize(python: Path, src: str, dst: str, ftype: int) -> None:
    proc = subprocess.run(
        [str(python), "-c", QUANTIZE],
        input=json.dumps({"src": src, "dst": dst, "ftype": ftype}),
        text=True,
        capture_output=True,
        timeout=1200,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not lines or json.loads(lines[-1])["rc"] != 0:
        raise RuntimeError(f"llama_model_quantize failed: {proc.stderr[-1500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="cpu")
    ap.add_argument(
        "--gguf", required=True, help="the exact Q4_1 GGUF written by bitdistiller-export --format gguf"
    )
    ap.add_argument("--types", default="q2_k,q3_k_m")
    ap.add_argument("--ppl-seqlen", type=int, default=256)
    ap.add_argument("--ppl-chunks", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    src = Path(args.gguf)
    types = args.types.split(",")
    bad = [t for t in types if t not in FTYPES]
    if not src.is_file() or bad:  # before the venv build or any quantization
        sys.exit(
            f"gguf_lossy: {'no file ' + str(src) if not src.is_file() else 'unknown --types ' + ','.join(bad)}"
            f" (types: {', '.join(FTYPES)})"
        )

    import os

    from decode_speed import llamacpp
    from llamacpp_venv import ensure_llamacpp

    from leanlm.core.bench_report import machine_info, save_section
    from leanlm.core.evaluation import heldout_texts
    from leanlm.core.evaluation.perplexity import token_stream
    from leanlm.core.models import load_tokenizer

    info = {**machine_info(), "load_average_1min": os.getloadavg()[0]}
    print(json.dumps(info), flush=True)
    python = ensure_llamacpp()
    out_dir = HERE / "results" / args.label
    work = out_dir / ".work" / "gguf_lossy"
    work.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer("default")
    texts = heldout_texts("text", "test")
    ids = token_stream(tok, texts, args.ppl_chunks * args.ppl_seqlen)
    chunks = [ids[i * args.ppl_seqlen : (i + 1) * args.ppl_seqlen] for i in range(args.ppl_chunks)]
    prompt = token_stream(tok, texts, 64)[:48]
    files = {"q4_1 (exact export)": src}
    t0 = time.time()
    for t in types:
        dst = work / f"{src.stem}.{t}.gguf"
        if not dst.exists():
            quantize(python, str(src), str(dst), FTYPES[t])
        files[f"{t} (lossy)"] = dst
    rows = {}
    for name, path in files.items():
        ppl = llamacpp(python, {"kind": "ppl", "gguf": str(path), "threads": 1, "chunks": chunks})["ppl"]
        dec = llamacpp(
            python,
            {
                "kind": "decode",
                "gguf": str(path),
                "threads": 1,
                "prompts": [prompt],
                "new_tokens": args.new_tokens,
                "prefill": prompt,
            },
        )
        rows[name] = {
            "bytes": path.stat().st_size,
            "ppl": ppl,
            "tok_s_1t": dec["runs"][0]["tok_s"],
            "first_tokens": dec["runs"][0]["tokens"][:16],
        }
        print(name, rows[name], flush=True)
    base = rows["q4_1 (exact export)"]
    lines = [
        f"GGUF of the same QAT model: the exact Q4_1 export and llama.cpp's lossy K-quants of it "
        f"(`llama_model_quantize`, requantized from Q4_1); llama.cpp perplexity on {args.ppl_chunks} held-out "
        f"chunks of {args.ppl_seqlen} tokens (the harness of decode_speed), greedy decode of {args.new_tokens} "
        f"tokens at 1 thread. {info['cpu']}, {info['cores']} cores, load average "
        f"{info['load_average_1min']:.2f} at the start.",
        "",
        "| GGUF | MiB | x Q4_1 size | ppl (llama.cpp) | ppl / Q4_1 | tok/s 1T |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['bytes'] / 2**20:.1f} | {r['bytes'] / base['bytes']:.2f} | {r['ppl']:.3f} | "
            f"{r['ppl'] / base['ppl']:.3f} | {r['tok_s_1t']:.1f} |"
        )
    result = {
        "rows": rows,
        "source": str(src),
        "machine": info,
        "wall_s": time.time() - t0,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv),
    }
    save_section(out_dir, "gguf_lossy", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
