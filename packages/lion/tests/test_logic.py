"""Pure logic: review parsing, discrimination math, generation filters, ROUGE-L, pools, state."""

from __future__ import annotations

import json

import pytest

from leanlm.core.errors import RecordError, UserError
from leanlm.core.testing.oracles import brute_force_max_rouge
from leanlm.lion.discriminate import discriminate, pair_scores
from leanlm.lion.filters import RougeDeduper, clean_generation, rule_rejection
from leanlm.lion.pools import load_pool, next_pools, normalize_pool
from leanlm.lion.prompts import REFEREE_RULES, referee_messages
from leanlm.lion.referee import parse_scores
from leanlm.lion.state import RunState


@pytest.mark.parametrize(
    ("review", "expected"),
    [
        ("Reasons: fine.\nScore of answer 1: 8\nScore of answer 2: 6", (8.0, 6.0)),
        ("Reasons: x\nScore of Answer 1: **7.5**\nScore of Answer 2: 9/10", (7.5, 9.0)),
        ("Score of the Assistant 1: 3\nScore of the Assistant 2: 10", (3.0, 10.0)),
        ("Answer 1 score: 4\nAnswer 2 score: 5", (4.0, 5.0)),
        # the format quoted first, then used: the last mention wins
        ("Format: Score of answer 1: <mark>. Score of answer 1: 2\nScore of answer 2: 8\n", (2.0, 8.0)),
        ("Score of answer 2: 6\nScore of answer 1: 7", (7.0, 6.0)),
    ],
)
def test_parse_scores_variants(review, expected):
    assert parse_scores(review) == expected


@pytest.mark.parametrize(
    "review",
    [
        "",
        None,
        "Both are good. 8 and 6.",
        "Score of answer 1: 8",  # only one mark
        "Score of answer 1: 0\nScore of answer 2: 6",  # out of range
        "Score of answer 1: 11\nScore of answer 2: 6",
        "Score of answer 1: <mark>\nScore of answer 2: <mark>",  # the template, unfilled
    ],
)
def test_parse_scores_rejects(review):
    assert parse_scores(review) is None


def test_referee_prompt_shows_input_and_both_answers_in_order():
    msgs = referee_messages("Sum these", "1 2 3", "ANSWER-ONE", "ANSWER-TWO")
    body = msgs[-1]["content"]
    assert "1 2 3" in body and body.index("ANSWER-ONE") < body.index("ANSWER-TWO")
    assert body.endswith(REFEREE_RULES)
    # the prompt's own format lines parse once filled in
    filled = REFEREE_RULES.split("nothing after them:\n")[1].replace("<mark>", "7", 1).replace("<mark>", "4")
    assert parse_scores(filled) == (7.0, 4.0)


def test_pair_scores_average_both_orders():
    # ts shows (teacher, student); st shows (student, teacher)
    assert pair_scores((9, 5), (6, 8)) == ((9 + 8) / 2, (5 + 6) / 2)


def test_discrimination_threshold_bias_and_input():
    items = [
        {"id": "a", "instruction": "A", "input": "ctx-a", "teacher_output": "t", "student_output": "s"},
        {"id": "b", "instruction": "B", "teacher_output": "t", "student_output": "s"},
        {"id": "c", "instruction": "C", "input": "", "teacher_output": "t", "student_output": "s"},
        {"id": "d", "instruction": "D", "input": "", "teacher_output": "t", "student_output": "s"},
        {"id": "e", "instruction": "E", "input": "", "teacher_output": "t", "student_output": "s"},
    ]
    scores = {
        "a": {"ts": (9, 7), "st": (8, 8)},  # teacher 8.5, student 7.5: gap exactly 1.0 -> hard
        "b": {"ts": (9, 8), "st": (8, 8.9)},  # gap 0.95 -> easy
        # position bias +2 for answer 1: equal answers look unequal in one order, not on average
        "c": {"ts": (9, 7), "st": (9, 7)},  # gap 0 -> easy
        "d": {"ts": (10, 2), "st": (3, 9)},  # teacher 9.5, student 2.5 -> hard, sorted first
        "e": {"ts": (9, 7), "st": None},  # one order unparsable: reported, not averaged
    }
    d = discriminate(items, scores)
    assert [r["id"] for r in d.hard] == ["d", "a"]
    assert sorted(r["id"] for r in d.easy) == ["b", "c"]
    assert d.unscored == ["e"]
    a = next(r for r in d.hard if r["id"] == "a")
    assert a["input"] == "ctx-a" and a["teacher_score"] == 8.5 and a["student_score"] == 7.5
    assert next(r for r in d.easy if r["id"] == "b")["input"] == ""
    s = d.summary()
    assert s["hard"] == 2 and s["easy"] == 2 and s["unscored"] == 1
    assert s["mean_teacher_score"] == pytest.approx((8.5 + 8.95 + 8 + 9.5) / 4)


def test_rule_filters():
    assert rule_rejection("Write an instruction for a poem about dogs.") is not None
    assert rule_rejection("Name three birds") == "3 words or fewer"
    assert rule_rejection("- List five rivers in Europe") == "starts with punctuation"
    assert rule_rejection("Ünderstand the causes of inflation today") == "starts with a non-ASCII character"
    assert rule_rejection("List five rivers in Europe.", truncated=True) == "cut off by the token limit"
    assert rule_rejection("List five rivers in Europe.") is None
    assert clean_generation('#New Task#: "List five rivers in Europe."') == "List five rivers in Europe."
    assert clean_generation("#Shown Task#:\nold\n\n#New Task#: Plan a garden for a small yard") == (
        "Plan a garden for a small yard"
    )


def test_rouge_known_pairs():
    ded = RougeDeduper(["Give three tips for staying healthy."])
    # identical up to case/punctuation: F = 1
    assert ded.similarity("give three tips for staying healthy").score == pytest.approx(1.0)
    # LCS "give three tips for staying" = 5 of 6 tokens each side: F = 2*5/12
    assert ded.similarity("Give three tips for staying awake.").score == pytest.approx(10 / 12)
    assert not ded.is_novel("Give three tips for staying awake.")[0]
    # LCS "give tips for" = 3; lengths 6 and 6: F = 0.5 -> kept
    novel, sim = ded.is_novel("Give me tips for learning Spanish")
    assert novel and sim.score == pytest.approx(0.5)
    assert sim.most_similar == "Give three tips for staying healthy."
    assert ded.similarity("Compose a haiku about autumn rain").score == 0.0


def test_rouge_branch_and_bound_equals_brute_force():
    import random

    rng = random.Random(0)
    vocab = [
        "the",
        "a",
        "of",
        "to",
        "cat",
        "dog",
        "runs",
        "fast",
        "slow",
        "red",
        "blue",
        "green",
        "house",
        "tree",
        "river",
        "sky",
    ]
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 12))) for _ in range(150)]
    ded = RougeDeduper(refs)
    for _ in range(40):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(4, 12)))
        assert ded.similarity(text).score == pytest.approx(brute_force_max_rouge(text, refs))
    assert ded.lcs_calls < 40 * 150  # the bound prunes


def test_pool_ids_duplicates_and_bookkeeping():
    pool = normalize_pool([{"instruction": "A"}, {"instruction": "A"}, {"instruction": "B", "input": "x"}])
    assert len(pool) == 2 and pool[0]["id"] != pool[1]["id"] and pool[1]["input"] == "x"
    assert normalize_pool([{"instruction": "A"}])[0]["id"] == pool[0]["id"]  # stable across runs
    with pytest.raises(RecordError, match="two different instructions"):
        normalize_pool([{"id": 1, "instruction": "A"}, {"id": 1, "instruction": "B"}])
    train = pool
    new_h = [{"id": "h1", "instruction": "H", "input": "", "kind": "hard", "rouge_max": 0.1}]
    new_e = [{"id": "e1", "instruction": "E", "input": ""}]
    nt, nc = next_pools(train, new_h, new_e)
    assert [r["id"] for r in nt] == [pool[0]["id"], pool[1]["id"], "h1", "e1"]
    assert nc == [
        {"id": "h1", "instruction": "H", "input": ""},
        {"id": "e1", "instruction": "E", "input": ""},
    ]


def test_pool_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n\n{"instruction": "fine"}\n{"instruction": \n')
    with pytest.raises(RecordError, match=r"bad.jsonl:4"):
        load_pool(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "ok"}\n\n{"prompt": "no instruction"}\n')
    with pytest.raises(RecordError, match=r"missing.jsonl:3: missing or empty 'instruction'"):
        load_pool(missing)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(UserError, match="empty"):
        load_pool(empty)
    with pytest.raises(UserError, match="no such"):
        load_pool(tmp_path / "nope.jsonl")


def test_state_refuses_other_settings(tmp_path):
    s = RunState.open(tmp_path, {"a": 1, "iterations": 1})
    s.mark_done(1, "teacher", {"requests": 5})
    s.mark_done(1, "teacher", {"requests": 0})  # a replay keeps the first report
    again = RunState.open(tmp_path, {"a": 1, "iterations": 3})
    assert again.is_done(1, "teacher") and again.report(1, "teacher") == {"requests": 5}
    assert again.config["iterations"] == 3
    with pytest.raises(UserError, match="other settings"):
        RunState.open(tmp_path, {"a": 2, "iterations": 1})
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1
