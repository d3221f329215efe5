"""Is SwitchBack's training speed-up significant? Welch's two-sample t-test on repeated run times.

For samples a (baseline) and b (SwitchBack) with sizes n1, n2, means m1, m2, variances v1, v2 (ddof=1):

    t  = (m1 - m2) / sqrt(v1/n1 + v2/n2)
    df = (v1/n1 + v2/n2)^2 / ((v1/n1)^2/(n1-1) + (v2/n2)^2/(n2-1))      (Welch-Satterthwaite)
    p  = 2 * (1 - F_t(|t|; df))                                          (two-sided)

The plot draws the t density with that df (the seed's plot used the pooled n1 + n2 - 2) and the
critical values +-t_{1-alpha/2}. Logs: the JSONL written by ``switchback-finetune`` (``seconds``
per run), or text logs with the seed's ``... TIME SPENT: <minutes> ...`` lines.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from leanlm.core.errors import RecordError, UserError
from leanlm.core.records import iter_jsonl_numbered, write_json, write_text

_TIME_SPENT = re.compile(r"TIME SPENT:\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


@dataclass
class WelchResult:
    n1: int
    n2: int
    mean1: float
    mean2: float
    sd1: float
    sd2: float
    percent_change: float  # (mean1 - mean2) / mean1 * 100: positive = the second is faster
    t: float
    df: float
    p: float
    alpha: float
    t_critical: float
    significant: bool
    unit: str = "s"


def parse_durations(path: str | Path) -> tuple[list[float], str]:
    """Run durations from a log: JSONL records with ``seconds`` (unit s) or ``TIME SPENT: X`` lines (unit min)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such log file")
    text = p.read_text(encoding="utf-8", errors="replace")
    values: list[float] = []
    unit = "s"
    if text.lstrip().startswith("{"):
        for lineno, record in iter_jsonl_numbered(p, require_objects=False):
            if not isinstance(record, dict) or "seconds" not in record:
                raise RecordError(p, lineno, "a run record needs a 'seconds' field")
            values.append(float(record["seconds"]))
    else:
        values = [float(m) for m in _TIME_SPENT.findall(text)]
        unit = "min"
    if len(values) < 2:
        raise UserError(f"{p}: {len(values)} run time(s) found; the t-test needs at least 2 runs per log")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{p}: a run time is not a finite number")
    return values, unit


def _mean_var(x: list[float]) -> tuple[float, float]:
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)


def welch_df(a: list[float], b: list[float]) -> float:
    """The Welch-Satterthwaite degrees of freedom."""
    (_, v1), (_, v2) = _mean_var(a), _mean_var(b)
    q1, q2 = v1 / len(a), v2 / len(b)
    if q1 + q2 == 0:
        return float(len(a) + len(b) - 2)  # no spread at all: df is undefined, fall back to pooled
    return (q1 + q2) ** 2 / (q1**2 / (len(a) - 1) + q2**2 / (len(b) - 1))


def welch_test(a: list[float], b: list[float], alpha: float = 0.05, unit: str = "s") -> WelchResult:
    """Two-sided Welch t-test of mean(a) == mean(b)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise UserError("the t-test needs at least 2 values in each sample")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha must be in (0, 1), got {alpha}")
    (m1, v1), (m2, v2) = _mean_var(a), _mean_var(b)
    se = math.sqrt(v1 / len(a) + v2 / len(b))
    df = welch_df(a, b)
    if se == 0:
        t = 0.0 if m1 == m2 else math.copysign(math.inf, m1 - m2)
        p = 1.0 if m1 == m2 else 0.0
    else:
        t = (m1 - m2) / se
        p = float(2 * stats.t.sf(abs(t), df))
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))
    return WelchResult(
        n1=len(a),
        n2=len(b),
        mean1=m1,
        mean2=m2,
        sd1=math.sqrt(v1),
        sd2=math.sqrt(v2),
        percent_change=(m1 - m2) / m1 * 100 if m1 else float("nan"),
        t=t,
        df=df,
        p=p,
        alpha=alpha,
        t_critical=t_crit,
        significant=p < alpha,
        unit=unit,
    )


def plot_t_distribution(
    result: WelchResult, path: str | Path, labels: tuple[str, str] = ("file1", "file2")
) -> Path:
    """PNG of the t density (Welch df), the rejection regions, and the observed t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from scipy import stats

    span = max(
        4.0, min(abs(result.t) * 1.15, 60.0) if math.isfinite(result.t) else 4.0, result.t_critical * 1.5
    )
    x = np.linspace(-span, span, 2000)
    y = stats.t.pdf(x, result.df)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, y, color="black", label=f"t density, Welch df = {result.df:.2f}")
    c = result.t_critical
    ax.fill_between(
        x, y, where=x >= c, color="tab:red", alpha=0.3, label=f"rejection region (alpha = {result.alpha})"
    )
    ax.fill_between(x, y, where=x <= -c, color="tab:red", alpha=0.3)
    if math.isfinite(result.t):
        t_shown = max(-span, min(span, result.t))
        ax.axvline(
            t_shown, color="tab:blue", ls="--", label=f"observed t = {result.t:.2f} (p = {result.p:.2g})"
        )
    ax.set_xlabel("t")
    ax.set_ylabel("density")
    ax.set_title(f"Welch t-test: {labels[0]} vs {labels[1]} ({result.percent_change:+.2f}% time)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def report_markdown(result: WelchResult, labels: tuple[str, str]) -> str:
    u = result.unit
    return "\n".join(
        [
            f"| log | runs | mean ({u}) | SD ({u}) |",
            "|---|---|---|---|",
            f"| {labels[0]} | {result.n1} | {result.mean1:.3f} | {result.sd1:.3f} |",
            f"| {labels[1]} | {result.n2} | {result.mean2:.3f} | {result.sd2:.3f} |",
            "",
            f"Time change (mean1 - mean2) / mean1: **{result.percent_change:+.2f}%**; Welch t = {result.t:.3f}, "
            f"df = {result.df:.2f}, p = {result.p:.3g}, alpha = {result.alpha}: "
            + ("**significant**" if result.significant else "not significant"),
        ]
    )


def compare_logs(file1: str, file2: str, alpha: float = 0.05, output_dir: str = "switchback-stats") -> str:
    """Welch's t-test between the run times of two fine-tuning logs (baseline first, SwitchBack second).

    Args:
        file1: log of the baseline runs (nn.Linear): switchback-finetune's JSONL or text with "TIME SPENT: X".
        file2: log of the SwitchBack runs, same formats.
        alpha: significance level of the two-sided test.
        output_dir: writes statistical_results.json, statistical_results.md and t_distribution.png here.
    """
    a, unit1 = parse_durations(file1)
    b, unit2 = parse_durations(file2)
    if unit1 != unit2:
        raise UserError(f"{file1} holds {unit1} and {file2} holds {unit2}: compare logs of the same kind")
    result = welch_test(a, b, float(alpha), unit=unit1)
    p1, p2 = Path(file1), Path(file2)
    # switchback-finetune names every log finetune_log.jsonl: then the folder tells them apart
    labels = (
        (p1.stem, p2.stem)
        if p1.stem != p2.stem
        else (f"{p1.parent.name}/{p1.stem}", f"{p2.parent.name}/{p2.stem}")
    )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {**asdict(result), "file1": str(file1), "file2": str(file2), "durations1": a, "durations2": b}
    write_json(out / "statistical_results.json", record)
    md = report_markdown(result, labels)
    write_text(out / "statistical_results.md", md + "\n")
    plot_t_distribution(result, out / "t_distribution.png", labels)
    return md
