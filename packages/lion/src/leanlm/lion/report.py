"""The reports of a Lion run: one dict per iteration (``iter_i/report.json``) and ``report.md``.

An iteration's report is built from the stage reports the state file recorded (each stage's first
run), so a replayed iteration reports what it cost when it ran. API usage sums the teacher, referee
and generator stages; each stage's ``paid`` counts its tokens over every attempt (a resumed stage's
meter saw only the last), and the cost is ``(prompt * price_in + completion * price_out) / 1e6``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanlm.core.records import write_text

API_STAGES = ("teacher", "referee", "generate_hard", "generate_easy")
USAGE = ("requests", "retries", "prompt_tokens", "completion_tokens")
SUMMARY_COLUMNS = (
    "iteration",
    "train_pool",
    "cache_pool",
    "hard",
    "easy",
    "mean_teacher_score",
    "mean_student_score",
    "new_hard",
    "new_easy",
    "unparsable_reviews",
)


def api_usage(stages: dict[str, dict[str, Any]], price_in: float, price_out: float) -> dict[str, Any]:
    """Requests, retries and tokens of the API stages, and their cost in USD (prices per 1M tokens)."""
    api = dict.fromkeys(USAGE, 0)
    for name in API_STAGES:
        stage = stages.get(name, {})
        paid = stage.get("paid", {})
        for key in api:
            api[key] += paid.get(key, stage.get(key, 0)) or 0
    cost = (api["prompt_tokens"] * price_in + api["completion_tokens"] * price_out) / 1e6
    return {**api, "cost_usd": round(cost, 6)}


def iteration_report(
    i: int,
    stages: dict[str, dict[str, Any]],
    pools: dict[str, list],
    price_in: float = 0.0,
    price_out: float = 0.0,
) -> dict[str, Any]:
    """Iteration ``i``'s report from its recorded ``stages`` and its ``pools`` (train, cache,
    next_train, next_cache); ``stages`` is kept in full under that key."""
    disc = stages.get("discriminate", {})
    teacher, referee = stages.get("teacher", {}), stages.get("referee", {})
    gh, ge = stages.get("generate_hard", {}), stages.get("generate_easy", {})
    return {
        "iteration": i,
        "train_pool": len(pools["train"]),
        "cache_pool": len(pools["cache"]),
        "teacher_answered": teacher.get("ok"),
        "teacher_failed": teacher.get("failed_count"),
        "student_answered": stages.get("infer", {}).get("ok"),
        "scored": referee.get("ok"),
        "unparsable_reviews": referee.get("extra", {}).get("unparsable_count"),
        "hard": disc.get("hard"),
        "easy": disc.get("easy"),
        "unscored": disc.get("unscored"),
        "mean_teacher_score": disc.get("mean_teacher_score"),
        "mean_student_score": disc.get("mean_student_score"),
        "new_hard": gh.get("ok"),
        "new_easy": ge.get("ok"),
        "rejected": {
            "hard": gh.get("extra", {}).get("rejected"),
            "easy": ge.get("extra", {}).get("rejected"),
        },
        "next_train_pool": len(pools["next_train"]),
        "next_cache_pool": len(pools["next_cache"]),
        "api": api_usage(stages, price_in, price_out),
        "train_loss": stages.get("train", {}).get("train_loss"),
        "seconds": {
            k: round(float(v.get("seconds", v.get("train_runtime", 0)) or 0), 2) for k, v in stages.items()
        },
        "stages": stages,
    }


def write_summary(run_dir: Path, reports: list[dict[str, Any]]) -> Path:
    """``run_dir/report.md``: one table row per finished iteration, with its API usage and cost."""
    header = "| " + " | ".join(SUMMARY_COLUMNS) + " | requests | tokens | cost USD |"
    lines = ["# Lion run report", "", header, "|" + "---|" * (len(SUMMARY_COLUMNS) + 3)]
    for r in reports:
        a = r["api"]
        cells = [str(r.get(k)) for k in SUMMARY_COLUMNS]
        cells += [
            str(a["requests"]),
            str(a["prompt_tokens"] + a["completion_tokens"]),
            f"{a['cost_usd']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    path = Path(run_dir) / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
