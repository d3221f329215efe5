import json

import pytest

from leanlm.core.errors import UserError
from leanlm.core.evaluation import render_markdown, speed_report, write_report


def _q(qid, cat, tokens, seconds, forwards=None, ids=None, accept=None):
    d = {"id": qid, "category": cat, "new_tokens": tokens, "seconds": seconds, "output_ids": ids}
    if forwards is not None:
        d["forwards"] = forwards
    if accept is not None:
        d["accept_lengths"] = accept
    return d


RUNS = {
    "greedy": [
        _q("1", "math", 100, 4.0, 100, [1, 2, 3]),
        _q("2", "math", 50, 2.0, 50, [4, 5]),
        _q("3", "qa", 60, 3.0, 60, [6]),
    ],
    "spec": [
        _q("1", "math", 100, 2.0, 40, [1, 2, 3]),
        _q(
            "2",
            "math",
            50,
            1.0,
            None,
            [4, 9],
            accept=[3, 2, 2, 3, 2, 3, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2],
        ),
        _q("3", "qa", 60, 1.5, 30, [6]),
    ],
}


def test_report_numbers_by_hand():
    rep = speed_report(RUNS, baseline="greedy")
    assert rep["categories"] == ["math", "qa"]
    g, s = rep["methods"]["greedy"], rep["methods"]["spec"]
    # baseline against itself
    assert g["overall"]["speedup"] == pytest.approx(1.0)
    assert g["overall"]["mean_accepted"] == pytest.approx(1.0)
    assert g["overall"]["equal_outputs"] == pytest.approx(1.0)
    assert g["overall"]["tokens_per_s"] == pytest.approx(210 / 9.0)
    # spec: 210 tokens in 4.5 s; baseline 9 s; forwards 40 + 20 (len of accept_lengths) + 30 = 90
    o = s["overall"]
    assert o["n"] == 3 and o["new_tokens"] == 210
    assert o["tokens_per_s"] == pytest.approx(210 / 4.5)
    assert o["speedup"] == pytest.approx(9.0 / 4.5)
    assert o["mean_accepted"] == pytest.approx(210 / 90)
    assert o["equal_outputs"] == pytest.approx(2 / 3)
    # Spec-Bench's ratio of mean per-question speeds: mean(50, 50, 40) / mean(25, 25, 20)
    assert o["speedup_mean_speed"] == pytest.approx((140 / 3) / (70 / 3))
    m = s["categories"]["math"]
    assert m["speedup"] == pytest.approx(6.0 / 3.0)
    assert m["mean_accepted"] == pytest.approx(150 / 60)
    assert m["equal_outputs"] == pytest.approx(0.5)
    q = s["categories"]["qa"]
    assert q["speedup"] == pytest.approx(2.0) and q["mean_accepted"] == pytest.approx(2.0)


def test_missing_questions_and_forwards():
    runs = {"greedy": RUNS["greedy"], "partial": [_q("3", "qa", 60, 1.0)]}
    p = speed_report(runs)["methods"]["partial"]
    assert p["overall"]["n"] == 1 and p["overall"]["speedup"] == pytest.approx(3.0)
    assert p["overall"]["mean_accepted"] is None and p["overall"]["equal_outputs"] is None
    assert "math" not in p["categories"]


def test_bad_input():
    with pytest.raises(UserError, match="baseline"):
        speed_report({"a": RUNS["greedy"]}, baseline="greedy2")
    with pytest.raises(UserError, match="seconds"):
        speed_report({"greedy": [{"id": "1", "new_tokens": 3}]})
    with pytest.raises(UserError, match="twice"):
        speed_report({"greedy": RUNS["greedy"] + RUNS["greedy"][:1]})
    with pytest.raises(UserError, match="shares no question"):
        speed_report({"greedy": RUNS["greedy"], "x": [_q("9", "qa", 1, 1.0)]})


def test_markdown_and_write(tmp_path):
    rep = speed_report(RUNS)
    md = render_markdown(rep)
    assert "| spec | 2.00x | 2.00x | 2.00x | 2.33 | 46.7 |" in md
    assert "| spec | 3 | 210 | 4.50 | 46.7 | 2.00x | 2.33 | 66.7% |" in md
    j, m = write_report(tmp_path / "out" / "speed", rep)
    assert j.name == "speed.json" and m.name == "speed.md"
    assert json.loads(j.read_text())["methods"]["spec"]["overall"]["new_tokens"] == 210
    assert m.read_text() == md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speed.json", "speed.md"]
