"""BiTA training step: the one-forward packed layout ("joint") vs real tokens without autograd ("two_pass").

    OMP_NUM_THREADS=1 uv run python packages/bita/bench/training_step.py [--reps 3]

Embedded model (SmolLM2-135M, fp32, CPU, 1 thread), M=3, P=16, batch 2, 64 mask groups. For each
layout (prompt length, response length, cutoff) it times forward + backward of the same batch in
both modes, interleaved, median of ``--reps``, checks that the two losses agree, and reports
seconds per step. Writes ``training_step/results.json`` and
``results.md`` next to this file (or under ``--out``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYOUTS = [(100, 96, 384), (300, 512, 1024)]  # (prompt tokens, response tokens, cutoff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "training_step"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-groups", type=int, default=64)
    args = ap.parse_args()

    import torch

    from leanlm.bita.data import build_example
    from leanlm.bita.model import BiTAConfig, BiTAModel
    from leanlm.core.bench_report import save_section
    from leanlm.core.models import load_model
    from leanlm.core.sft import PaddingCollator

    torch.set_num_threads(1)
    model = BiTAModel(load_model("default", device="cpu"), BiTAConfig(prefix_dropout=0.0))
    V = model.vocab_size
    rng = random.Random(0)
    rows = []
    for n_src, n_tgt, cutoff in LAYOUTS:
        examples = []
        for _ in range(args.batch_size):
            src = [rng.randrange(3, 40000) for _ in range(n_src)]
            tgt = [rng.randrange(3, 40000) for _ in range(n_tgt)]
            ex = build_example(
                src, tgt, num_masks=3, vocab_size=V, max_groups=args.max_groups, cutoff=cutoff, rng=rng
            )
            examples.append(ex)
        batch = PaddingCollator(0, pad_to_multiple_of=4)(examples)
        times: dict[str, list[float]] = {"joint": [], "two_pass": []}
        losses = {}
        for _ in range(args.reps):
            for mode in times:
                model.config.training_forward = mode
                model.zero_grad()
                t0 = time.perf_counter()
                loss = model(**batch)["loss"]
                loss.backward()
                times[mode].append(time.perf_counter() - t0)
                losses[mode] = loss.item()
        joint, two = statistics.median(times["joint"]), statistics.median(times["two_pass"])
        rows.append(
            {
                "prompt_tokens": n_src,
                "response_tokens": n_tgt,
                "cutoff": cutoff,
                "real_tokens": [e["freeze_len"] for e in examples],
                "mask_tokens": [e["seq_len"] - e["freeze_len"] for e in examples],
                "joint_s": joint,
                "two_pass_s": two,
                "speedup": joint / two,
                "loss_joint": losses["joint"],
                "loss_two_pass": losses["two_pass"],
            }
        )
        print(rows[-1], flush=True)
    lines = [
        "## BiTA training step: joint vs two-pass (embedded model, fp32, CPU, 1 thread)",
        "",
        f"Batch {args.batch_size}, M=3, P=16, up to {args.max_groups} groups; forward + backward, "
        f"median of {args.reps}.",
        "",
        "| prompt | response | cutoff | real tokens | mask tokens | joint s | two-pass s | speedup | loss joint | loss two-pass |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['prompt_tokens']} | {r['response_tokens']} | {r['cutoff']} | {r['real_tokens']} | "
            f"{r['mask_tokens']} | {r['joint_s']:.2f} | {r['two_pass_s']:.2f} | {r['speedup']:.2f}x | "
            f"{r['loss_joint']:.4f} | {r['loss_two_pass']:.4f} |"
        )
    save_section(args.out, "training_step", {"settings": vars(args), "rows": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
