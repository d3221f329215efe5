"""Fine-tuning data for D-LLM: (prompt, response) pairs from three kinds of source.

1. The original layout, a folder ``<name>/{train.json, test.json, prompt.json}``:
   * alpaca records ``{"instruction", "input", "output"}``; prompt.json has ``prompt_with_input``
     and ``prompt_wo_input`` (``str.format_map`` templates);
   * piqa records ``{"goal", "sol1", "sol2", "answer": 1|2}``; prompt.json has ``prompt``.
     The original template also names ``{input}``, which piqa records lack (a KeyError there);
     here ``input`` defaults to "" and any other missing field is a clear error.
   Without prompt.json the built-in templates below are used.
2. Offline tasks from ``leanlm.core.datasets``: piqa, boolq, social_i_qa, openbookqa, mmlu and gsm8k
   (answer: the worked solution). A choice task comes in one of two formats: ``number`` (the options
   are listed in the prompt and the answer is the option's number, as in the original's piqa
   template) or ``text`` (the prompt is the question and the answer is the right option's text,
   scored lm-eval style by comparing the log-likelihood of every option). They ship one split, so a
   seeded ``test_size`` of it is held out for testing and the rest is the training set.
3. A local .json/.jsonl file of alpaca records (used for both splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import read_json, read_records
from leanlm.core.templates import format_prompt

CHOICE_TASKS = ("piqa", "boolq", "social_i_qa", "openbookqa", "mmlu")
CHOICE_FORMATS = ("number", "text")
TASKS = (*CHOICE_TASKS, "gsm8k")
SYNONYMS = {"siqa": "social_i_qa", "obqa": "openbookqa"}

PIQA_PROMPT = (
    "Here is a goal and two ways to reach it. Decide which way works better.\n\n"
    "### Goal:\n{goal}\n\n### Solution 1:\n{sol1}\n\n### Solution 2:\n{sol2}\n\n"
    'Reply with "1" or "2" only.\n\n### Response:\n'
)
REQUIRED = {"alpaca": ("instruction", "output"), "piqa": ("goal", "sol1", "sol2", "answer")}


@dataclass
class Example:
    prompt: str
    response: str
    num_choices: int = 0  # > 0: a multiple-choice example
    label: int | None = None  # 0-based index of the right option
    # "text" format: the options as continuations of the prompt (response == choices[label]);
    # None: the "number" format, whose response is the option's number
    choices: tuple[str, ...] | None = None


# ----------------------------------------------------------------------------- original folder layout


def _check(record: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)}")
    return record


def _fill(template: str, record: dict[str, Any], where: str) -> str:
    values = {"input": ""} | record  # the piqa-template fix: {input} may be absent from the records
    try:
        return template.format_map(values)
    except KeyError as e:
        raise UserError(
            f"{where}: the prompt template needs field {e.args[0]!r}, which the record lacks"
        ) from None


def folder_examples(folder: str | Path, split: str, template: str | None = None) -> list[Example]:
    """Examples of ``folder/<split>.json`` in the alpaca or piqa template (guessed from the folder name)."""
    folder = Path(folder)
    path = folder / f"{split}.json"
    if not path.exists():
        raise UserError(f"{path}: no such file (expected {folder}/{{train,test,prompt}}.json)")
    kind = template or ("piqa" if "piqa" in folder.name.lower() else "alpaca")
    if kind not in REQUIRED:
        raise UserError(f"unknown template {kind!r}; the folder layout supports alpaca and piqa")
    prompts = read_json(folder / "prompt.json") if (folder / "prompt.json").exists() else {}
    records = read_json(path)
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of records")
    out = []
    for i, raw in enumerate(records):
        where = f"{path}: record {i}"
        r = _check(raw, REQUIRED[kind], where)
        if kind == "piqa":
            prompt = _fill(prompts.get("prompt", PIQA_PROMPT), r, where)
            answer = int(r["answer"])
            if answer not in (1, 2):
                raise UserError(f"{where}: answer must be 1 or 2, got {r['answer']!r}")
            out.append(Example(prompt, str(answer), num_choices=2, label=answer - 1))
        else:
            key = "prompt_with_input" if r.get("input") else "prompt_wo_input"
            if key in prompts:
                prompt = _fill(prompts[key], r, where)
            else:
                prompt = format_prompt("alpaca", r["instruction"], r.get("input") or None)
            out.append(Example(prompt, str(r["output"])))
    return out


# ----------------------------------------------------------------------------- offline tasks


def choice_example(question: str, choices: list[str], label: int, context: str | None = None) -> Example:
    options = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(choices))
    instruction = f"{question}\n\nOptions:\n{options}\n\nReply with the number of the correct option only."
    return Example(format_prompt("alpaca", instruction, context or None), str(label + 1), len(choices), label)


def text_choice_example(task: str, r: dict[str, Any]) -> Example:
    """The ``text`` format: a plain question prompt whose continuations are the options (leading space)."""
    if task == "piqa":
        prompt = f"Goal: {r['question']}\nSolution:"
    else:
        context = f"{r['context']}\n" if r.get("context") else ""
        prompt = f"{context}Question: {r['question']}\nAnswer:"
    choices = tuple(f" {c}" for c in r["choices"])
    return Example(prompt, choices[r["label"]], len(choices), r["label"], choices)


def task_example(task: str, r: dict[str, Any], choice_format: str = "number") -> Example:
    if task == "gsm8k":
        return Example(format_prompt("alpaca", r["question"]), r["solution"])
    if choice_format == "text":
        return text_choice_example(task, r)
    if task == "piqa":
        return Example(
            PIQA_PROMPT.format(goal=r["question"], sol1=r["choices"][0], sol2=r["choices"][1]),
            str(r["label"] + 1),
            2,
            r["label"],
        )
    return choice_example(r["question"], r["choices"], r["label"], r.get("context"))


def task_examples(
    task: str, split: str, *, test_size: int = 200, seed: int = 0, choice_format: str = "number"
) -> list[Example]:
    from leanlm.core.datasets import load_records

    rows = load_records(task, seed=seed)
    n_test = min(test_size, len(rows) // 5)
    rows = rows[:n_test] if split == "test" else rows[n_test:]
    return [task_example(task, r, choice_format) for r in rows]


# ----------------------------------------------------------------------------- entry point


def load_examples(
    source: str | Path,
    split: str = "train",
    *,
    template: str | None = None,
    limit: int | None = None,
    test_size: int = 200,
    seed: int = 0,
    choice_format: str = "number",
) -> list[Example]:
    """Examples for ``split`` ("train" or "test") from a folder, an offline task name, or a file.

    ``choice_format`` ("number" or "text") applies to the offline choice tasks (see the module doc).
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be train or test, got {split!r}")
    if choice_format not in CHOICE_FORMATS:
        raise UserError(f"choice_format must be one of {', '.join(CHOICE_FORMATS)}, got {choice_format!r}")
    name = SYNONYMS.get(str(source), str(source))
    path = Path(str(source)).expanduser()
    if path.is_dir():
        examples = folder_examples(path, split, template)
    elif name in TASKS:
        examples = task_examples(name, split, test_size=test_size, seed=seed, choice_format=choice_format)
    elif path.suffix in {".json", ".jsonl"}:
        examples = []
        for i, raw in enumerate(read_records(path)):
            r = _check(raw, REQUIRED["alpaca"], f"{path}: record {i}")
            examples.append(
                Example(format_prompt("alpaca", r["instruction"], r.get("input") or None), str(r["output"]))
            )
    else:
        raise UserError(
            f"unknown data source {source!r}: pass a folder with train/test/prompt.json, a .json/.jsonl file, "
            f"or one of the offline tasks {', '.join(TASKS)}"
        )
    if not examples:
        raise UserError(f"{source}: no {split} examples")
    return examples[:limit] if limit else examples


def tokenize(tokenizer: Any, examples: list[Example], max_length: int) -> list[dict[str, list[int]]]:
    """Prompt-masked features (labels -100 on the prompt) via ``leanlm.core.sft``."""
    from leanlm.core.sft import tokenize_example

    return [tokenize_example(tokenizer, e.prompt, e.response, max_length=max_length) for e in examples]
