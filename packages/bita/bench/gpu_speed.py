"""BiTA wall-clock speedup over greedy at batch size 1, self-contained (for ``.ci/gpu-check``).

A bare GPU machine has no network and no embedded model, so everything is made here, from the
repository's own text (``*.md`` and ``*.py`` files, bytes as tokens):

1. a small byte-level LLaMA (default 6 layers, hidden 384, about 9.9M parameters, 40 MB in fp32)
   pretrained for ``--lm-steps`` on random 256-byte windows of the training files;
2. self-distillation: its greedy continuations (``--answer-tokens``) of 64-byte prompts cut from
   the training files (equal lengths, so batched ``generate`` needs no padding);
3. a BiTA adapter (M=3, P=16) trained on them (``BiTAModel.forward``, AdamW, cosine);
4. on prompts from **held-out** files: greedy ``generate`` (KV cache) and BiTA for each ``--trees``
   shape, interleaved per prompt, CUDA-synchronised wall-clock, token-identical check, MAT.

Writes ``results.json`` and ``results.md`` under ``--out``. Without CUDA it runs a smoke version
(tiny sizes, a few steps) that only checks the code path, and says so; ``--require-gpu`` makes
it exit 0 with a note instead.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
BOS, EOS, VOCAB = 256, 257, 264  # bytes, then BOS/EOS; vocabulary padded to a multiple of 8


def corpus(root: Path) -> tuple[list[bytes], list[bytes]]:
    """Training and held-out texts: every 10th file (sorted by path) is held out."""
    files = sorted(
        p
        for pattern in ("packages/**/*.py", "packages/**/*.md", "*.md")
        for p in root.glob(pattern)
        if p.is_file() and p.stat().st_size > 512 and ".venv" not in p.parts
    )
    texts = [p.read_bytes() for p in files]
    held = [t for i, t in enumerate(texts) if i % 10 == 9]
    train = [t for i, t in enumerate(texts) if i % 10 != 9]
    if not train or not held:
        raise SystemExit(f"gpu_speed: too few text files under {root}")
    return train, held


def windows(texts: list[bytes], n: int, length: int, rng: random.Random) -> torch.Tensor:
    """n random byte windows [n, length] from texts longer than ``length``."""
    long = [t for t in texts if len(t) > length + 1]
    out = []
    for _ in range(n):
        t = rng.choice(long)
        s = rng.randrange(0, len(t) - length)
        out.append(list(t[s : s + length]))
    return torch.tensor(out, dtype=torch.long)


def make_lm(layers: int, hidden: int, device: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(2, hidden // 64)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 8 * 8,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    model.generation_config.pad_token_id = EOS
    return model


def warmup_cosine(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over 5% of the steps (at least 1), then cosine decay to 0."""
    warm = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def pretrain(model: torch.nn.Module, train: list[bytes], a: argparse.Namespace, device: str) -> list[float]:
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lm_lr, weight_decay=0.01)
    sched = warmup_cosine(opt, a.lm_steps)
    losses = []
    model.train()
    for step in range(a.lm_steps):
        x = windows(train, a.lm_batch, 256, rng).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, a.lm_steps // 10) == 0 or step == a.lm_steps - 1:
            losses.append(round(float(loss), 4))
            print(f"lm step {step}: loss {float(loss):.3f}", flush=True)
    return losses


@torch.no_grad()
def self_distill(model: torch.nn.Module, prompts: torch.Tensor, tokens: int, batch: int) -> list[list[int]]:
    model.eval()
    answers = []
    for i in range(0, len(prompts), batch):
        x = prompts[i : i + batch].to(next(model.parameters()).device)
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, do_sample=False)
        answers += out[:, x.shape[1] :].tolist()
    return answers


def train_adapter(bita, pairs, a: argparse.Namespace) -> list[float]:
    from leanlm.bita.data import build_dataset
    from leanlm.core.sft import PaddingCollator

    data = build_dataset(
        pairs, num_masks=bita.num_masks, vocab_size=bita.vocab_size, max_groups=64, cutoff=512, resample=4
    )
    collate = PaddingCollator(EOS, pad_to_multiple_of=4)
    params = [bita.mask_embeddings, bita.prefix]
    opt = torch.optim.AdamW(params, lr=a.adapter_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, a.adapter_lr, total_steps=a.adapter_steps, pct_start=0.05
    )
    rng = random.Random(0)
    losses = []
    bita.train()
    for step in range(a.adapter_steps):
        batch = collate([data[rng.randrange(len(data))] for _ in range(a.adapter_batch)])
        batch = {k: v.to(bita.device) for k, v in batch.items()}
        loss = bita(**batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % max(1, a.adapter_steps // 10) == 0 or step == a.adapter_steps - 1:
            losses.append(round(float(loss), 4))
            print(f"adapter step {step}: loss {float(loss):.3f}", flush=True)
    bita.eval()
    return losses


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timed_greedy(base, ids: list[int], n: int, device: str) -> tuple[list[int], float]:
    x = torch.tensor([ids], device=device)
    _sync(device)
    t0 = time.perf_counter()
    out = base.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False)
    _sync(device)
    return out[0, len(ids) :].tolist(), time.perf_counter() - t0


def measure(bita, held: list[bytes], a: argparse.Namespace, device: str) -> dict:
    from leanlm.bita.decoding import BiTADecoder

    prompts = windows(held, a.eval_prompts, 64, random.Random(1)).tolist()
    decoders = {t: BiTADecoder(bita, t) for t in a.trees.split(";")}
    for dec in decoders.values():  # warm-up: kernels, allocator, the engine's buffers
        for p in prompts[:2]:
            dec.generate(p, 16)
    for p in prompts[:2]:
        timed_greedy(bita.base, p, 16, device)
    rows = {"greedy": []} | {t: [] for t in decoders}
    for p in prompts:  # interleaved per prompt: load and clocks hit every method alike
        ref, sec = timed_greedy(bita.base, p, a.eval_tokens, device)
        rows["greedy"].append({"seconds": sec, "tokens": len(ref), "forwards": len(ref), "same": True})
        for t, dec in decoders.items():
            _sync(device)
            t0 = time.perf_counter()
            out = dec.generate(p, a.eval_tokens)
            _sync(device)
            rows[t].append(
                {
                    "seconds": time.perf_counter() - t0,
                    "tokens": len(out.tokens),
                    "forwards": out.forwards,
                    "same": out.tokens == ref,
                }
            )
    greedy_s = sum(r["seconds"] for r in rows["greedy"])
    summary = {}
    for name, rs in rows.items():
        sec = sum(r["seconds"] for r in rs)
        tok = sum(r["tokens"] for r in rs)
        summary[name] = {
            "seconds": sec,
            "tokens": tok,
            "tokens_per_s": tok / sec,
            "speedup": greedy_s / sec,
            "mat": tok / max(1, sum(r["forwards"] for r in rs)),
            "identical": sum(r["same"] for r in rs) / len(rs),
        }
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu-check-out/bita")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--lm-steps", type=int, default=1500)
    ap.add_argument("--lm-batch", type=int, default=64)
    ap.add_argument("--lm-lr", type=float, default=2e-3)
    ap.add_argument("--distill-prompts", type=int, default=1024)
    ap.add_argument("--answer-tokens", type=int, default=128)
    ap.add_argument("--adapter-steps", type=int, default=600)
    ap.add_argument("--adapter-batch", type=int, default=16)
    ap.add_argument("--adapter-lr", type=float, default=3e-2)
    ap.add_argument("--eval-prompts", type=int, default=24)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--trees", default="1;1-1;1-1-1;3-2-1;tri:5")
    ap.add_argument("--require-gpu", action="store_true", help="without CUDA: print a note and exit 0")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    smoke = device == "cpu"
    if smoke and a.require_gpu:
        print("gpu_speed: no CUDA device here; BiTA GPU speed case skipped")
        return
    if smoke:  # code path only: tiny sizes, figures meaningless
        print("gpu_speed: no CUDA device, smoke run (tiny sizes; the figures say nothing about speed)")
        a.layers, a.hidden, a.lm_steps, a.lm_batch = 2, 64, 20, 8
        a.distill_prompts, a.answer_tokens, a.adapter_steps, a.adapter_batch = 16, 24, 6, 4
        a.eval_prompts, a.eval_tokens = 2, 16
    sys.path[:0] = [str(ROOT / "packages" / "core" / "src"), str(ROOT / "packages" / "bita" / "src")]
    from leanlm.bita.model import BiTAConfig, BiTAModel

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    train, held = corpus(ROOT)
    base = make_lm(a.layers, a.hidden, device)
    params = sum(p.numel() for p in base.parameters())
    print(f"byte LM: {params / 1e6:.1f}M parameters, {len(train)} training / {len(held)} held-out files")
    t0 = time.time()
    lm_losses = pretrain(base, train, a, device)
    lm_s = time.time() - t0
    base.eval()
    for p in base.parameters():
        p.requires_grad_(False)
    t0 = time.time()
    prompts = windows(train, a.distill_prompts, 64, random.Random(2))
    answers = self_distill(base, prompts, a.answer_tokens, 128)
    pairs = [(p, ans) for p, ans in zip(prompts.tolist(), answers, strict=True)]
    distill_s = time.time() - t0
    bita = BiTAModel(base, BiTAConfig(num_masks=3, num_prefix=16, prefix_dropout=0.1, base_model="byte-lm"))
    t0 = time.time()
    adapter_losses = train_adapter(bita, pairs, a)
    adapter_s = time.time() - t0
    summary = measure(bita, held, a, device)
    info = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke run)",
        "torch": torch.__version__,
        "dtype": "float32",
        "batch_size": 1,
        "lm_parameters": params,
        "lm_bytes_fp32": params * 4,
        "smoke": smoke,
        "settings": vars(a),
        "seconds": {"lm": lm_s, "distill": distill_s, "adapter": adapter_s, "total": time.time() - t_start},
        "lm_losses": lm_losses,
        "adapter_losses": adapter_losses,
    }
    (out / "results.json").write_text(json.dumps(info | {"methods": summary}, indent=2))
    best = max((k for k in summary if k != "greedy"), key=lambda k: summary[k]["speedup"])
    lines = [
        f"# BiTA speed at batch 1 on {info['device']} (byte-level {params / 1e6:.1f}M LLaMA, fp32)",
        "",
        "| method | tokens | seconds | tokens/s | speedup | MAT | identical |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {k} | {v['tokens']} | {v['seconds']:.2f} | {v['tokens_per_s']:.1f} | {v['speedup']:.2f}x | "
            f"{v['mat']:.2f} | {100 * v['identical']:.0f}% |"
            for k, v in summary.items()
        ),
        "",
        f"Fastest tree: {best} ({summary[best]['speedup']:.2f}x greedy, MAT {summary[best]['mat']:.2f}).",
        f"LM loss {lm_losses[0]} -> {lm_losses[-1]}; adapter loss {adapter_losses[0]} -> {adapter_losses[-1]}.",
    ]
    if smoke:
        lines.append("Smoke run on CPU (tiny sizes): checks the code path only.")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(v["identical"] < 1 for v in summary.values()) and device == "cpu":
        raise SystemExit("gpu_speed: an fp32 CPU output differs from greedy")
    if not math.isfinite(summary[best]["speedup"]):
        raise SystemExit("gpu_speed: no timing")


if __name__ == "__main__":
    main()
