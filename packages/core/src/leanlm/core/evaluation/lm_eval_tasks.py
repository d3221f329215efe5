"""Local lm-eval task definitions built from leanlm's offline datasets.

Each covered task turns ``load_records(<dataset>)`` into flat lm-eval documents, written as JSONL
next to a generated YAML config (``dataset_path: json`` with absolute ``data_files``), so lm-eval
never reaches the hub. Document fields:

* multiple choice: ``query`` (prompt ending in "Answer:" or similar), ``choices``, ``label`` (int);
* winogrande (lm-eval's "multiple inputs" form): ``contexts`` (the sentence up to the blank, once
  per option), ``label``, ``continuation`` (the rest of the sentence, scored under each context);
* gsm8k: ``question``, ``answer`` (normalized final number), ``solution`` (worked answer ending
  in ``#### N``, shown in few-shot examples).

Task names carry a ``leanlm_`` prefix so they never shadow lm-eval's own hub-backed tasks.
MMLU is one subtask per subject (5-shot from that subject's dev split, first five, as in the
original benchmark) under a group whose accuracy is weighted by subject size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]
PREFIX = "leanlm_"
LETTERS = "ABCDEFGHIJ"

MC_METRICS = [
    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
]

# Few-shot exemplars for GSM8K, written for leanlm (the offline copy has no train split).
GSM8K_EXEMPLARS: list[Doc] = [
    {
        "question": (
            "A baker makes 4 trays of rolls with 12 rolls on each tray. She sells 30 rolls. "
            "How many rolls are left?"
        ),
        "solution": "She makes 4 * 12 = 48 rolls. After selling 30, 48 - 30 = 18 rolls are left.\n#### 18",
        "answer": "18",
    },
    {
        "question": (
            "Tom reads 15 pages every weekday and 25 pages on each day of the weekend. "
            "How many pages does he read in one week?"
        ),
        "solution": (
            "On weekdays he reads 5 * 15 = 75 pages. On the weekend he reads 2 * 25 = 50 pages. "
            "In total he reads 75 + 50 = 125 pages.\n#### 125"
        ),
        "answer": "125",
    },
    {
        "question": "A shirt costs $20 and is on sale for 25% off. How much does the shirt cost on sale?",
        "solution": "The discount is 20 * 25 / 100 = 5 dollars. The sale price is 20 - 5 = 15 dollars.\n#### 15",
        "answer": "15",
    },
    {
        "question": (
            "A garden has 3 rows of tomato plants with 8 plants in each row. Each plant gives "
            "6 tomatoes. How many tomatoes does the garden give?"
        ),
        "solution": "There are 3 * 8 = 24 plants. They give 24 * 6 = 144 tomatoes.\n#### 144",
        "answer": "144",
    },
    {
        "question": (
            "Mia had 50 stickers. She gave a fifth of them to her brother and then bought 7 more. "
            "How many stickers does she have now?"
        ),
        "solution": (
            "A fifth of 50 is 50 / 5 = 10, so she has 50 - 10 = 40 stickers. After buying 7 more "
            "she has 40 + 7 = 47.\n#### 47"
        ),
        "answer": "47",
    },
]


def _mc(query: str, choices: list[str], label: int) -> Doc:
    return {"query": query, "choices": [str(c) for c in choices], "label": int(label)}


def _qa(r: Doc) -> Doc:
    return _mc(f"Question: {r['question'].strip()}\nAnswer:", r["choices"], r["label"])


def _boolq(r: Doc) -> Doc:
    question = r["question"].strip().rstrip("?")
    return _mc(f"{r['context'].strip()}\nQuestion: {question}?\nAnswer:", r["choices"], r["label"])


def _hellaswag_clean(text: str) -> str:
    # WikiHow contexts carry markup like " [title]" and "[step]"
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ").strip()


def _hellaswag(r: Doc) -> Doc:
    query = _hellaswag_clean(f"{r.get('context', '')}: {r['question']}")
    return _mc(query, [_hellaswag_clean(c) for c in r["choices"]], r["label"])


def _openbookqa(r: Doc) -> Doc:
    return _mc(r["question"].strip(), r["choices"], r["label"])


def _siqa(r: Doc) -> Doc:
    return _mc(
        f"{r['context'].strip()}\nQuestion: {r['question'].strip()}\nAnswer:", r["choices"], r["label"]
    )


def _winogrande(r: Doc) -> Doc:
    sentence = r["question"]
    blank = sentence.index("_")
    return {
        "contexts": [sentence[:blank] + option for option in r["choices"]],
        "label": int(r["label"]),
        "continuation": sentence[blank + 1 :].strip(),
    }


def _mmlu(r: Doc) -> Doc:
    lines = [r["question"].strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"])]
    return _mc("\n".join(lines) + "\nAnswer:", list(LETTERS[: len(r["choices"])]), r["label"])


def _gsm8k(r: Doc) -> Doc:
    from leanlm.core.evaluation.gsm8k import normalize_number

    return {
        "question": r["question"].strip(),
        "answer": normalize_number(str(r["answer"])) or "",
        "solution": r.get("solution", ""),
    }


@dataclass(frozen=True)
class TaskSpec:
    """How one covered benchmark becomes an lm-eval task."""

    name: str
    dataset: str
    to_doc: Callable[[Doc], Doc]
    config: dict[str, Any]
    num_fewshot: int = 0
    # extra splits: split name -> docs, or None to reuse the test split for few-shot examples
    extra_splits: Callable[[], dict[str, list[Doc]]] | None = None
    notes: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=lambda: MC_METRICS)


def _mc_config(doc_to_text: str = "query") -> dict[str, Any]:
    return {
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        # few-shot examples come from the same split; lm-eval leaves the question itself out
        "fewshot_split": "test",
    }


GSM8K_CONFIG: dict[str, Any] = {
    "output_type": "generate_until",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "answer",
    "fewshot_split": "fewshot",
    "fewshot_config": {"sampler": "first_n", "doc_to_target": "solution"},
    "generation_kwargs": {
        "until": ["Question:", "</s>", "<|im_end|>", "\n\n\n"],
        "do_sample": False,
        "max_gen_toks": 256,
    },
    "filter_list": [
        {
            "name": "extract",
            "filter": [
                {"function": "custom", "filter_fn": "leanlm.core.evaluation.lm_eval_bridge.gsm8k_filter"}
            ],
        }
    ],
}

TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in [
        TaskSpec("piqa", "piqa", _qa, _mc_config()),
        TaskSpec("hellaswag", "hellaswag", _hellaswag, _mc_config()),
        TaskSpec(
            "winogrande",
            "winogrande",
            _winogrande,
            {
                "output_type": "multiple_choice",
                "doc_to_text": "label",
                "doc_to_choice": "contexts",
                "doc_to_target": "continuation",
                "fewshot_split": "test",
            },
            notes="partial scoring: the continuation after the blank is scored under each option",
        ),
        TaskSpec("arc_challenge", "arc_challenge", _qa, _mc_config()),
        TaskSpec("boolq", "boolq", _boolq, _mc_config()),
        TaskSpec("social_i_qa", "social_i_qa", _siqa, _mc_config()),
        TaskSpec("openbookqa", "openbookqa", _openbookqa, _mc_config()),
        TaskSpec(
            "gsm8k",
            "gsm8k",
            _gsm8k,
            GSM8K_CONFIG,
            num_fewshot=5,
            extra_splits=lambda: {"fewshot": [dict(d) for d in GSM8K_EXEMPLARS]},
            metrics=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            notes="greedy generation; answer extracted by extract_gsm8k_answer; exact match",
        ),
        TaskSpec(
            "mmlu",
            "mmlu",
            _mmlu,
            {},
            num_fewshot=5,
            metrics=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            notes="one subtask per subject, 5-shot from mmlu_dev (first five), size-weighted group acc",
        ),
    ]
}
