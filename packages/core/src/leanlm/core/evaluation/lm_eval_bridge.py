"""Run lm-evaluation-harness on an in-memory model, offline, on local task files.

``build_tasks(names)`` writes, under ``$LEANLM_HOME/lm_eval_tasks/``, one folder per task: the
documents as JSONL and a YAML config pointing at them (see ``lm_eval_tasks``). ``run_lm_eval``
wraps the model in ``HFLM(pretrained=model, tokenizer=tokenizer)`` and calls
``lm_eval.simple_evaluate`` with a ``TaskManager`` that indexes only those folders
(``include_defaults=False``), with ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` set for the
call. Results come back as ``{task: {"acc": ..., "acc_norm": ..., "n": ...}}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from leanlm.core.errors import UserError
from leanlm.core.evaluation.lm_eval_tasks import PREFIX, TASKS, TaskSpec
from leanlm.core.records import read_json, write_json, write_jsonl, write_text

# bump when the generated documents or configs change, so cached folders are rebuilt
TASK_FORMAT_VERSION = 1


class _FunctionRef(str):
    """A dotted function path that YAML must write as ``!function path`` for lm-eval."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FunctionRef, lambda d, v: d.represent_scalar("!function", str(v)))


def gsm8k_filter(resps: Sequence[Sequence[str]], docs: Sequence[Any]) -> list[list[str]]:
    """lm-eval custom filter: each generated answer -> its extracted final number."""
    from leanlm.core.evaluation.gsm8k import extract_gsm8k_answer

    return [[extract_gsm8k_answer(r) or "[invalid]" for r in per_doc] for per_doc in resps]


def tasks_root() -> Path:
    from leanlm.core.paths import leanlm_home

    return leanlm_home() / "lm_eval_tasks"


def _canonical(name: str) -> str:
    from leanlm.core.datasets import DATASET_SYNONYMS

    key = name.removeprefix(PREFIX)
    key = DATASET_SYNONYMS.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown lm-eval task {name!r}; local tasks: {', '.join(TASKS)}")
    return key


def _yaml_config(spec: TaskSpec, task: str, files: dict[str, Path], extra: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {split: str(p) for split, p in files.items()}},
        "test_split": "test",
        **spec.config,
        **extra,
        "num_fewshot": spec.num_fewshot,
        "metric_list": spec.metrics,
        "metadata": {"version": TASK_FORMAT_VERSION, "source": f"leanlm.core.datasets:{spec.dataset}"},
    }
    for flt in cfg.get("filter_list", []):
        for step in flt["filter"]:
            if "filter_fn" in step:
                step["filter_fn"] = _FunctionRef(step["filter_fn"])
    return cfg


def _write_task(
    folder: Path,
    spec: TaskSpec,
    task: str,
    docs: list[dict],
    splits: dict[str, list[dict]],
    extra: dict[str, Any] | None = None,
) -> None:
    files = {"test": folder / "test.jsonl"}
    write_jsonl(files["test"], docs)
    for split, rows in splits.items():
        files[split] = folder / f"{split}.jsonl"
        write_jsonl(files[split], rows)
    cfg = _yaml_config(spec, task, files, extra or {})
    write_text(folder / f"{task}.yaml", yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


def _mmlu_subject_title(subject: str) -> str:
    return subject.replace("_", " ")


def _build_mmlu(folder: Path, spec: TaskSpec) -> list[str]:
    from leanlm.core.datasets import load_records

    test: dict[str, list[dict]] = {}
    dev: dict[str, list[dict]] = {}
    for target, name in ((test, "mmlu"), (dev, "mmlu_dev")):
        for r in load_records(name):
            target.setdefault(r["subject"], []).append(spec.to_doc(r))
    subtasks = []
    for subject in sorted(test):
        task = f"{PREFIX}mmlu_{subject}"
        description = f"The following are multiple choice questions (with answers) about {_mmlu_subject_title(subject)}.\n\n"
        _write_task(
            folder / subject,
            spec,
            task,
            test[subject],
            {"dev": dev.get(subject, [])},
            {**_mc_subject_config(), "description": description},
        )
        subtasks.append(task)
    group = {
        "group": f"{PREFIX}mmlu",
        "task": subtasks,
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": TASK_FORMAT_VERSION},
    }
    write_text(folder / f"_{PREFIX}mmlu.yaml", yaml.safe_dump(group, sort_keys=False))
    return subtasks


def _mc_subject_config() -> dict[str, Any]:
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "query",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
    }


def _stamp(spec: TaskSpec) -> dict[str, Any]:
    # the config and the exemplars are part of the cached folder's identity
    blob = json.dumps([spec.config, spec.num_fewshot, spec.metrics], sort_keys=True, default=str)
    return {"version": TASK_FORMAT_VERSION, "config": hashlib.sha1(blob.encode()).hexdigest()[:16]}


def build_tasks(names: Sequence[str] | None = None, root: str | Path | None = None) -> Path:
    """Write (or reuse) the local task folders for ``names`` (default: all); returns the root."""
    from leanlm.core.datasets import load_records

    root = Path(root) if root else tasks_root()
    for key in [_canonical(n) for n in (names or list(TASKS))]:
        spec = TASKS[key]
        folder = root / key
        stamp_path = folder / "built.json"
        if stamp_path.exists() and read_json(stamp_path) == _stamp(spec):
            continue
        if key == "mmlu":
            _build_mmlu(folder, spec)
        else:
            docs = [spec.to_doc(r) for r in load_records(spec.dataset)]
            splits = spec.extra_splits() if spec.extra_splits else {}
            _write_task(folder, spec, PREFIX + key, docs, splits)
        write_json(stamp_path, _stamp(spec))  # written last: a half-built folder is rebuilt
    return root


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Set ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` (env and ``datasets.config``) for a block."""
    import datasets

    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_cfg = getattr(datasets.config, "HF_HUB_OFFLINE", None)
    os.environ.update(dict.fromkeys(keys, "1"))
    datasets.config.HF_HUB_OFFLINE = True  # read at import time; the env alone is too late
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = saved_cfg
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def task_manager(root: Path) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(root), include_defaults=False)


def _flatten(entry: dict[str, Any], n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if "," not in key or not isinstance(value, (int, float)):
            continue  # alias, name, "N/A" stderr
        metric, _, _filter = key.partition(",")
        out.setdefault(metric, float(value))
    if n is not None:
        out["n"] = n
    return out


def evaluate_lm(
    lm: Any,
    tasks: Sequence[str],
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    apply_chat_template: bool = False,
    gen_kwargs: dict[str, Any] | None = None,
    bootstrap_iters: int = 0,
    root: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate any ``lm_eval.api.model.LM`` on local tasks; see ``run_lm_eval`` for the arguments."""
    if not tasks:
        raise UserError("run_lm_eval: no tasks given")
    keys = [_canonical(t) for t in tasks]
    root = build_tasks(keys, root)
    with offline():
        import lm_eval

        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[PREFIX + k for k in keys],
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=task_manager(root),
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            apply_chat_template=apply_chat_template,
            gen_kwargs=gen_kwargs,
        )
    if results is None:  # non-zero rank under a distributed launch
        return {}
    n_samples = results.get("n-samples", {})
    out = {}
    for key in keys:
        name = PREFIX + key
        entry = results.get("groups", {}).get(name) or results["results"].get(name, {})
        if key == "mmlu":
            n = sum(v.get("effective", 0) for t, v in n_samples.items() if t.startswith(f"{PREFIX}mmlu_"))
        else:
            n = n_samples.get(name, {}).get("effective")
        out[key] = _flatten(entry, n)
    return out


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    apply_chat_template: bool = False,
    gen_kwargs: dict[str, Any] | None = None,
    bootstrap_iters: int = 0,
    root: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate an in-memory causal LM on local lm-eval tasks; returns ``{task: metrics}``.

    ``tasks`` are names from ``lm_eval_tasks.TASKS`` (``mmlu``, ``piqa``, ``hellaswag``,
    ``winogrande``, ``arc_challenge``, ``boolq``, ``social_i_qa``, ``openbookqa``, ``gsm8k``).
    ``num_fewshot=None`` keeps each task's default (mmlu and gsm8k 5-shot, the rest 0-shot); an
    int overrides all. ``limit`` caps the documents per task (per subject for mmlu). Metrics:
    ``acc``/``acc_norm`` (multiple choice) or ``exact_match`` (gsm8k), ``*_stderr`` when
    ``bootstrap_iters > 0``, and ``n``, the number of documents scored.
    """
    for t in tasks:
        _canonical(t)  # fail on a bad name before the slow imports
    with offline():
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    return evaluate_lm(lm, tasks, num_fewshot, limit, apply_chat_template, gen_kwargs, bootstrap_iters, root)
