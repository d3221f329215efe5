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
from leanlm.bitdistiller.options import GenerateOptions

log = logging.getLogger(__name__)


def teacher_path(config: GenerateOptions) -> Path:
    """``--output``, or a file in ``--output_dir`` named by every setting that shapes the answers."""
    c = config
    if c.output:
        return Path(c.output)
    return Path(c.output_dir) / teacher_file_name(
        c.dataset, c.temperature, c.max_new_tokens, c.seed, c.max_sample
    )


def generate_teacher_data(config: GenerateOptions) -> dict[str, Any]:
    """Generate (or resume) teacher answers; returns {"path", "records", "failed", "stats"}.

    The backend is the one ``config``'s flags name (``GenerateOptions.backend_spec``); for a server,
    ``model`` is the served name ("default" asks the server which model it serves).
    """
    from leanlm.core.generation import SamplingParams, generate

    prompts = teacher_prompts(config.dataset, config.max_sample, config.seed)
    path = teacher_path(config)
    be = config.backend_spec().build()
    params = SamplingParams(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
    )
    requests = [
        {"id": p["id"], "prompt": p["prompt"], "meta": {"prompt": p["prompt"], "dataset": config.dataset}}
        for p in prompts
    ]
    try:
        results = generate(
            requests,
            be,
            params,
            output=path,
            desc=f"teacher:{config.dataset}",
            max_failed_fraction=config.max_failed_fraction,
        )
    finally:
        be.close()
    failed = sum(not r.ok for r in results)
    return {"path": str(path), "records": len(results), "failed": failed, "stats": be.stats.as_dict()}
