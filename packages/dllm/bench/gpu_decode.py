"""D-LLM decode speed on a CUDA GPU: the decode loop with every block executed vs ~50% dynamic skipping, and
HF ``generate`` on the dense model; TinyLlama-1.1B shapes with random weights, bf16, batch 1, 128 new tokens.

Routers are set by hand (not trained): all-execute, random (data-dependent, about half the blocks), or every
second block from ``start_layer`` skipped. This measures what skipping saves in this implementation's decode
loop on a GPU, not what a trained model would choose.

    python packages/dllm/bench/gpu_decode.py [OUT_DIR]      # writes OUT_DIR/gpu_decode.json (default: bench/results/cuda)
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from leanlm.core.records import write_json
from leanlm.dllm import DLLM, DLLMConfig, generate

if not torch.cuda.is_available():
    print("gpu_decode.py: no CUDA device: skipped")
    sys.exit(0)
out_dir = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "results" / "cuda")
torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
base = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
ids = torch.randint(0, 32000, (1, 32), device="cuda")
N = 128


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), r


rows = []
t, _ = timed(
    lambda: base.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=N,
        min_new_tokens=N,
        do_sample=False,
        pad_token_id=0,
    )
)
rows.append({"mode": "HF generate (dense, KV cache)", "tok_s": N / t, "exec_ratio": 1.0})
d = DLLM(base, DLLMConfig(start_layer=2, reserve_initials=2)).merge_lora().eval()
for name, setup in (
    ("dense (same loop, routers execute all)", "dense"),
    ("D-LLM, random routers", "random"),
    ("D-LLM, every 2nd block from 2 skipped", "alternate"),
):
    with torch.no_grad():
        for i, r in d.routers.items():
            r.up.weight.zero_()
            li = int(i)
            if setup == "dense":
                r.up.bias.copy_(torch.tensor([-50.0, 50.0]))
            elif setup == "alternate":
                r.up.bias.copy_(torch.tensor([50.0, -50.0]) if li % 2 else torch.tensor([-50.0, 50.0]))
            else:
                g = torch.Generator().manual_seed(li)
                r.up.weight.copy_(torch.randn(r.up.weight.shape, generator=g) * 4.0)
                r.up.bias.zero_()
    t, o = timed(lambda: generate(d, ids, max_new_tokens=N))
    rows.append(
        {
            "mode": name,
            "tok_s": o.decode_tokens_per_s,
            "exec_ratio": o.stats[0]["decode_exec_ratio"],
            "flops_ratio": o.stats[0]["flops_ratio"],
            "new_tokens": o.new_tokens,
        }
    )
dense = rows[1]["tok_s"]
for r in rows:
    r["vs_dense_loop"] = r["tok_s"] / dense
    print(r, flush=True)
os.makedirs(out_dir, exist_ok=True)
write_json(
    Path(out_dir) / "gpu_decode.json",
    {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
)
