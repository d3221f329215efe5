"""Welch's t-test against scipy, the Welch-Satterthwaite df, log parsing and bad logs."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from leanlm.core.errors import RecordError, UserError
from leanlm.switchback.stats import compare_logs, parse_durations, welch_df, welch_test

A = [72.1, 72.9, 72.4, 72.8, 72.6, 72.3, 72.7, 72.2, 73.0, 72.7]
B = [65.2, 66.1, 65.0, 65.9, 65.4, 64.9, 66.3, 65.5, 65.6, 65.1, 65.8]


def test_welch_matches_scipy():
    r = welch_test(A, B, alpha=0.05)
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert r.t == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert r.significant and r.n1 == 10 and r.n2 == 11
    assert r.percent_change == pytest.approx((sum(A) / 10 - sum(B) / 11) / (sum(A) / 10) * 100)


def test_welch_on_overlapping_samples_is_not_significant():
    a, b = [10.0, 12.0, 11.0, 13.0], [11.5, 10.5, 12.5, 11.0, 12.0]
    r = welch_test(a, b, alpha=0.05)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-9) and not r.significant
    assert r.t_critical == pytest.approx(stats.t.ppf(0.975, r.df))


def test_welch_satterthwaite_df_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 3.0]
    v1, v2 = 5 / 3, 0.25  # sample variances (ddof=1)
    q1, q2 = v1 / 4, v2 / 3
    expected = (q1 + q2) ** 2 / (q1**2 / 3 + q2**2 / 2)
    assert welch_df(a, b) == pytest.approx(expected)
    assert welch_df(a, b) != pytest.approx(len(a) + len(b) - 2)  # not the pooled df the seed plotted
    # scipy's own Welch df (exposed as .df on the result object in scipy >= 1.11)
    assert welch_df(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).df)


def test_parse_jsonl_and_seed_text_logs(tmp_path):
    jl = tmp_path / "runs.jsonl"
    jl.write_text(
        "".join(json.dumps({"id": f"r{i}", "seconds": s}) + "\n" for i, s in enumerate([3.5, 4.0, 3.75]))
    )
    assert parse_durations(jl) == ([3.5, 4.0, 3.75], "s")
    txt = tmp_path / "Linear.txt"
    txt.write_text(
        "step 10 loss 1.2\nEND FINE-TUNE TIME SPENT: 72.57 minutes\nnoise\nEND FINE-TUNE TIME SPENT: 71.9 minutes\n"
    )
    assert parse_durations(txt) == ([72.57, 71.9], "min")


def test_bad_logs_give_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no such log file"):
        parse_durations(tmp_path / "missing.jsonl")
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"id": "r0", "seconds": 1.0}) + "\n")
    with pytest.raises(UserError, match="at least 2 runs"):
        parse_durations(one)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "r0", "seconds": 1.0}) + "\n{oops\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2"):
        parse_durations(bad)
    with pytest.raises(UserError, match="alpha"):
        welch_test(A, B, alpha=1.5)


def test_compare_logs_writes_results_and_plot(tmp_path):
    f1, f2 = tmp_path / "linear.jsonl", tmp_path / "switchback.jsonl"
    f1.write_text("".join(json.dumps({"id": i, "seconds": s}) + "\n" for i, s in enumerate(A)))
    f2.write_text("".join(json.dumps({"id": i, "seconds": s}) + "\n" for i, s in enumerate(B)))
    md = compare_logs(str(f1), str(f2), alpha=0.01, output_dir=str(tmp_path / "out"))
    assert "significant" in md and "linear" in md
    result = json.loads((tmp_path / "out" / "statistical_results.json").read_text())
    assert result["t"] == pytest.approx(stats.ttest_ind(A, B, equal_var=False).statistic)
    png = (tmp_path / "out" / "t_distribution.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    txt = tmp_path / "seed.txt"
    txt.write_text("TIME SPENT: 1\nTIME SPENT: 2\n")
    with pytest.raises(UserError, match="same kind"):
        compare_logs(str(f1), str(txt), output_dir=str(tmp_path / "out2"))
