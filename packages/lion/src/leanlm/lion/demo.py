"""``leanlm demo lion``: one offline Lion iteration at toy scale on CPU.

The embedded model (SmolLM2-135M-Instruct) plays teacher, referee (forced score format) and
generator through the ``hf`` backend; the student is a random ``tiny_llama`` (about 3.5M
parameters) trained on the teacher's answers. Every stage runs for real, through the same
``LionRun`` as ``lion-iterate``; only the sizes are small.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from leanlm.core.demo import DemoResult
from leanlm.core.records import read_jsonl, write_jsonl


def toy_pool(n: int, seed: int = 0, max_chars: int = 110) -> list[dict[str, Any]]:
    """``n`` short instructions (no input) from the offline ``instructions`` set."""
    from leanlm.core.datasets import load_records

    rows = load_records("instructions", seed=seed)
    short = [r for r in rows if not r.get("input") and len(r["instruction"]) <= max_chars]
    return [{"id": r["id"], "instruction": r["instruction"], "input": ""} for r in short[:n]]


def tiny_student(path: Path, seed: int = 0) -> Path:
    """A random tiny_llama with the embedded tokenizer, saved as a model folder."""
    from leanlm.core.models import load_tokenizer
    from leanlm.core.testing.tiny_models import tiny_llama

    if not (path / "config.json").exists():
        tiny_llama(seed=seed).save_pretrained(path)
        load_tokenizer("default").save_pretrained(path)
    return path


def toy_config(out_dir: Path, model: str = "default", pool_size: int = 6, new_per_kind: int = 2) -> Any:
    from leanlm.lion.iterate import IterateConfig
    from leanlm.lion.roles import RoleConfig

    pool_path = out_dir / "pool.jsonl"
    if not pool_path.exists():
        write_jsonl(pool_path, toy_pool(pool_size))
    teacher = RoleConfig(backend="hf", model=model, batch_size=max(1, pool_size))
    return IterateConfig(
        train_pool=str(pool_path),
        student=str(tiny_student(out_dir / "student_base")),
        teacher=teacher,
        num_hard=new_per_kind,
        num_easy=new_per_kind,
        teacher_max_tokens=40,
        student_max_tokens=24,
        referee_max_tokens=16,
        generator_max_tokens=40,
        review_attempts=2,
        train_options={
            "num_train_epochs": 3,
            "learning_rate": 1e-3,
            "max_length": 96,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.0,
        },
    )


METRICS = (
    "hard",
    "easy",
    "new_hard",
    "new_easy",
    "mean_teacher_score",
    "mean_student_score",
    "unparsable_reviews",
)


def limit_threads() -> None:
    """Torch threads for small models on a shared machine: ``leanlm.core.demo.small_model_threads``."""
    import torch

    from leanlm.core.demo import small_model_threads

    torch.set_num_threads(small_model_threads(torch.get_num_threads()))


def run_demo(out_dir: Path, model: str = "default") -> DemoResult:
    from leanlm.lion.iterate import LionRun

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cfg = toy_config(out_dir, model)
    report = LionRun(out_dir / "run", cfg).run()[0]
    new = read_jsonl(out_dir / "run" / "iter_1" / "new_hard.jsonl") + read_jsonl(
        out_dir / "run" / "iter_1" / "new_easy.jsonl"
    )
    example = f"; e.g. “{new[0]['instruction'][:100]}”" if new else ""
    summary = "\n".join(
        [
            f"- teacher/referee/generator: `{model}` (hf backend); student: random tiny_llama, trained "
            f"{report['seconds'].get('train', 0):.0f} s (loss {report['train_loss'] or float('nan'):.2f})",
            f"- pools: train {report['train_pool']}, cache {report['cache_pool']} -> next train "
            f"{report['next_train_pool']}, next cache {report['next_cache_pool']}",
            f"- referee: {report['scored']} scored, {report['unparsable_reviews']} reviews unparsable after retries; "
            f"hard {report['hard']}, easy {report['easy']}; mean marks teacher {report['mean_teacher_score']}, "
            f"student {report['mean_student_score']}",
            f"- generated: {report['new_hard']} hard + {report['new_easy']} easy new instructions{example}",
            f"- local model calls: {sum(int(s.get('requests', 0) or 0) for s in report['stages'].values())}; "
            f"report in `{out_dir / 'run' / 'report.md'}`",
        ]
    )
    metrics = {k: report[k] for k in METRICS}
    return DemoResult("lion", ok=True, seconds=time.time() - t0, summary=summary, metrics=metrics)
