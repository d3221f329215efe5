"""``leanlm demo dllm``: a toy fine-tune, chat and eval on the embedded model, CPU, a few minutes."""

from __future__ import annotations

import copy
import time
from pathlib import Path

from leanlm.core.demo import DemoResult


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    import torch

    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.records import write_json
    from leanlm.core.sft import PaddingCollator
    from leanlm.core.templates import format_prompt
    from leanlm.dllm import DLLM, DLLMConfig, generate
    from leanlm.dllm.data import load_examples, tokenize
    from leanlm.dllm.evaluate import choice_accuracy
    from leanlm.dllm.train import DLLM_RECIPE, finetune

    t0 = time.time()
    out_dir = Path(out_dir)
    torch.manual_seed(0)
    tok = load_tokenizer(model)
    base = load_model(model, device="cpu")
    train = load_examples("piqa", "train", limit=16, test_size=40)
    test = load_examples("piqa", "test", test_size=40)[:16]
    dllm = DLLM(copy.deepcopy(base), DLLMConfig(target=0.5))
    flags = DLLM_RECIPE.override(
        epochs=1,
        batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        logging_steps=1,
        save_steps=10**6,
        resume=False,
    )
    summary = finetune(dllm, tok, tokenize(tok, train, 160), out_dir / "run", flags, router_lr=5e-2)
    folder = dllm.save(out_dir / "dllm")
    dllm = DLLM.load(folder, base)  # reload from the small folder, LoRA merged
    acc = choice_accuracy(dllm, tok, test, batch_size=4)
    prompts = [format_prompt("alpaca", q) for q in ("Name two primary colors.", "What is 3 plus 4?")]
    feats = [{"input_ids": i, "attention_mask": [1] * len(i)} for i in tok(prompts)["input_ids"]]
    batch = PaddingCollator(tok.pad_token_id, side="left")(feats)
    gen = generate(
        dllm, batch["input_ids"], batch["attention_mask"], max_new_tokens=24, eos_token_id=tok.eos_token_id
    )
    answers = [tok.decode(t, skip_special_tokens=True).strip() for t in gen.tokens]
    metrics = {
        "train_steps": summary["steps"],
        "accuracy": acc["accuracy"],
        "eval_exec_ratio": acc["exec_ratio"],
        "eval_flops_ratio": acc["flops_ratio"],
        "chat_stats": gen.stats,
        "decode_tokens_per_s": gen.decode_tokens_per_s,
    }
    write_json(out_dir / "metrics.json", metrics | {"answers": answers})
    st = gen.stats[0]
    lines = [
        f"- toy fine-tune: {summary['steps']} steps on 16 PIQA examples (target execution ratio 0.5); saved {folder}",
        f"- PIQA accuracy on 16 held-out examples: {acc['accuracy']:.2f}; execution ratio {acc['exec_ratio']:.3f}, "
        f"FLOPs ratio {acc['flops_ratio']:.3f}",
        f"- chat: {answers[0][:80]!r}; exec ratio {st['exec_ratio']:.3f}, FLOPs ratio {st['flops_ratio']:.3f}, "
        f"KV ratio {st['kv_ratio']:.3f}; {gen.decode_tokens_per_s:.1f} decode tokens/s",
        "- toy scale: too few steps to reach the target ratio or a useful accuracy (see packages/dllm/README.md)",
    ]
    return DemoResult("dllm", ok=True, seconds=time.time() - t0, summary="\n".join(lines), metrics=metrics)
