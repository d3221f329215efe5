import pytest

from leanlm.core.errors import UserError
from leanlm.core.evaluation import extract_gsm8k_answer, gsm8k_accuracy, normalize_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 3 + 15 = 18 eggs.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("Step 1: 5 apples. Step 2: 7 apples.\nThe answer is 18.", "18"),
        ("the final answer is $1,234.50", "1234.5"),
        ("It costs $1,234.50 in total", "1234.5"),
        ("Answer: -7", "-7"),
        ("First 12 then 30 then 45 cookies", "45"),
        ("So he pays 18.00 dollars.", "18"),
        # the marker wins over a later number, the phrase over the last number
        ("#### 10\nmore text with 99", "10"),
        ("The answer is 4. Then I kept talking about 99 things.", "4"),
        ("no digits here", None),
        ("", None),
        ("0.50 of it", "0.5"),
    ],
)
def test_extract(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_normalize_number():
    assert normalize_number("$1,000") == "1000"
    assert normalize_number("007") == "7"
    assert normalize_number("-0.0") == "0"
    assert normalize_number(".5") == "0.5"


def test_accuracy_dict_and_list():
    records = [{"id": "a", "answer": "18"}, {"id": "b", "answer": "1,234"}, {"id": "c", "answer": "5"}]
    res = gsm8k_accuracy({"a": "#### 18", "b": "The answer is $1234."}, records)
    assert res["correct"] == 2 and res["total"] == 3 and res["missing"] == 1
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["per_id"]["c"] == {"pred": None, "gold": "5", "correct": False}
    res = gsm8k_accuracy(["17", "1234", "5 apples"], records)
    assert [v["correct"] for v in res["per_id"].values()] == [False, True, True]


def test_accuracy_bad_input():
    with pytest.raises(UserError):
        gsm8k_accuracy(["1"], [{"id": "a", "answer": "1"}, {"id": "b", "answer": "2"}])
    with pytest.raises(UserError):
        gsm8k_accuracy({"a": "1"}, [{"id": "a"}])
