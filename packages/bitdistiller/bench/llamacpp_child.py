"""llama.cpp side of ``decode_speed.py``: runs inside the bench-only llama-cpp-python venv (no leanlm imports).

Reads one JSON job on stdin and prints one JSON result line on stdout. Jobs:

* ``{"kind": "decode", "gguf", "threads", "prompts": [[ids]], "new_tokens", "prefill": [ids]}``:
  greedy decoding (argmax of the logits, EOS not special: the same token count as leanlm's run) of each
  prompt, decode tokens/s = (new_tokens - 1) / time from the first to the last generated token, and the
  prefill time of the ``prefill`` ids in one batch; plus the process's peak RSS.
* ``{"kind": "ppl", "gguf", "threads", "chunks": [[ids]]}``: GPTQ-style perplexity, each chunk
  evaluated from an empty cache with every position's logits, NLL of tokens 1..n-1 (the same formula
  as ``leanlm.core.evaluation.perplexity``).
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
from _rss import peak_rss_mib  # this script's folder is on sys.path when it runs
from llama_cpp import Llama


def _model(path: str, threads: int, n_ctx: int, logits_all: bool) -> Llama:
    return Llama(
        model_path=path,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
    )


def _argmax_next(llm: Llama) -> int:
    # the last evaluated position's logits, read from the context (with logits_all=False,
    # llama-cpp-python 0.3 no longer copies them into llm.scores)
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    return int(np.argmax(logits))


def decode(job: dict) -> dict:
    n_ctx = max(len(job["prefill"]), max(len(p) for p in job["prompts"]) + job["new_tokens"]) + 8
    llm = _model(job["gguf"], job["threads"], n_ctx, logits_all=False)
    runs = []
    for prompt in job["prompts"]:
        llm.reset()
        llm.eval(prompt)
        out, stamps = [], []
        for _ in range(job["new_tokens"]):
            tok = _argmax_next(llm)
            out.append(tok)
            stamps.append(time.perf_counter())
            llm.eval([tok])
        decode_s = stamps[-1] - stamps[0]
        runs.append({"tokens": out, "tok_s": (len(out) - 1) / decode_s})
    llm.reset()
    t = time.perf_counter()
    llm.eval(job["prefill"])
    prefill_ms = (time.perf_counter() - t) * 1e3
    return {
        "runs": runs,
        "prefill_ms": prefill_ms,
        "peak_rss_mib": peak_rss_mib(),
    }


def ppl(job: dict) -> dict:
    seqlen = len(job["chunks"][0])
    llm = _model(job["gguf"], job["threads"], seqlen, logits_all=True)
    total, count = 0.0, 0
    for chunk in job["chunks"]:
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[: len(chunk)], dtype=np.float64)  # [n, V]
        lp = logits[:-1] - logits[:-1].max(-1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
        total -= float(lp[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
    return {"ppl": math.exp(total / count), "nll": total / count, "n_chunks": len(job["chunks"])}


if __name__ == "__main__":
    job = json.loads(sys.stdin.read())
    result = decode(job) if job["kind"] == "decode" else ppl(job)
    print(json.dumps(result))
