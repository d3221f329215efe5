"""Teacher data generation through a core generation backend (seeded, resumable).

The full-precision model answers prompts (``data.teacher_prompts``) with sampling at T = 0.7,
top-p 1 by default; every answer is appended to a JSONL file as it arrives, so an interrupted run
resumes where it stopped and never re-requests a finished id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from leanlm.bitdistiller.data import teacher_file_name, teacher_prompts
from leanlm.core.generation.spec import BackendSpec

log = logging.getLogger(__name__)


def generate_teacher_data(
    model: str,
    dataset: str,
    out: str | Path | None = None,
    out_dir: str | Path = ".",
    max_sample: int | None = 3000,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 1024,
    seed: int = 42,
    backend: str | BackendSpec = "hf",
    batch_size: int = 16,
    backend_options: dict[str, Any] | None = None,
    max_failed_fraction: float = 0.0,
) -> dict[str, Any]:
    """Generate (or resume) teacher answers; returns {"path", "records", "failed", "stats"}.

    ``backend``: a ``BackendSpec``, or a backend name completed by ``model``, ``batch_size`` and
    ``backend_options`` (server flags such as ``base_url``). For a server, ``model`` is the served
    name ("default" asks the server which model it serves).
    """
    from leanlm.core.generation import SamplingParams, generate

    prompts = teacher_prompts(dataset, max_sample, seed)
    path = (
        Path(out)
        if out
        else Path(out_dir) / teacher_file_name(dataset, temperature, max_new_tokens, seed, max_sample)
    )
    if not isinstance(backend, BackendSpec):
        served = str(backend).lower() == "openai" and model == "default"
        backend = BackendSpec.from_flags(**{"backend": backend, "model": None if served else model,
                                            "batch_size": batch_size, **(backend_options or {})})  # fmt: skip
    be = backend.build()
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    requests = [
        {"id": p["id"], "prompt": p["prompt"], "meta": {"prompt": p["prompt"], "dataset": dataset}}
        for p in prompts
    ]
    try:
        results = generate(
            requests,
            be,
            params,
            output=path,
            desc=f"teacher:{dataset}",
            max_failed_fraction=max_failed_fraction,
        )
    finally:
        be.close()
    failed = sum(not r.ok for r in results)
    return {"path": str(path), "records": len(results), "failed": failed, "stats": be.stats.as_dict()}
