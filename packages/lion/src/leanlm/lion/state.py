"""The run directory's state file: which stages of which iteration are done, and their reports.

``state.json`` is rewritten atomically after every stage, so a crash leaves the last finished stage
recorded. The stage outputs themselves live in resumable cache files; the state only saves
re-doing work that is not cached per request (training) and keeps each stage's first report (a
replayed stage costs nothing and would report zero requests).

Each finished stage also records a digest of its inputs. A re-run whose inputs differ (say the
teacher stage was allowed to lose a few requests, and a later run got their answers) redoes that
stage and so, through their inputs, every stage after it: the end result equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import read_json, write_json

STATE_VERSION = 1


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able ``parts``: what a stage's result depends on."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


STAGES = ("teacher", "train", "infer", "referee", "discriminate", "generate_hard", "generate_easy", "pools")
RECORDS = (
    "done",
    "reports",
    "inputs",
    "starts",
)  # what the state file keeps per iteration, besides the config


@dataclass
class RunState:
    path: Path
    config: dict[str, Any]
    done: dict[str, list[str]] = field(default_factory=dict)  # iteration -> finished stages
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # iteration -> stage -> report
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)  # iteration -> stage -> inputs' digest
    starts: dict[str, dict[str, int]] = field(
        default_factory=dict
    )  # iteration -> stage -> cache size at start

    @classmethod
    def open(
        cls,
        run_dir: Path,
        config: dict[str, Any],
        mutable: tuple[str, ...] = ("iterations", "max_failed_fraction"),
    ) -> RunState:
        """Load ``run_dir/state.json`` or start one. A resumed run must use the same config, except ``mutable`` keys."""
        path = Path(run_dir) / "state.json"
        if not path.exists():
            state = cls(path, dict(config))
            state.save()
            return state
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise UserError(f"{path}: not a lion state file (version {STATE_VERSION})")
        saved = data.get("config") or {}
        diffs = [
            k for k in sorted(set(saved) | set(config)) if k not in mutable and saved.get(k) != config.get(k)
        ]
        if diffs:
            shown = "; ".join(f"{k}: was {saved.get(k)!r}, now {config.get(k)!r}" for k in diffs[:4])
            raise UserError(
                f"{path}: this run was started with other settings ({shown}); use a new --run_dir"
            )
        merged = {**saved, **{k: config[k] for k in mutable if k in config}}
        return cls(path, merged, **{k: data.get(k) or {} for k in RECORDS})

    def save(self) -> None:
        records = {k: getattr(self, k) for k in RECORDS}
        write_json(self.path, {"version": STATE_VERSION, "config": self.config, **records})

    def is_done(self, iteration: int, stage: str) -> bool:
        return stage in self.done.get(str(iteration), [])

    def report(self, iteration: int, stage: str) -> dict[str, Any] | None:
        return self.reports.get(str(iteration), {}).get(stage)

    def mark_done(
        self, iteration: int, stage: str, report: dict[str, Any], inputs: str | None = None
    ) -> None:
        it = str(iteration)
        if stage not in self.done.setdefault(it, []):
            self.done[it].append(stage)
            self.reports.setdefault(it, {})[stage] = report
            if inputs is not None:
                self.inputs.setdefault(it, {})[stage] = inputs
        self.save()

    def inputs_changed(self, iteration: int, stage: str, inputs: str) -> bool:
        """Whether a finished stage ran on other inputs than ``inputs`` (then it must be redone).

        A state file from before input digests were recorded has none: its stages count as unchanged.
        """
        recorded = self.inputs.get(str(iteration), {}).get(stage)
        return self.is_done(iteration, stage) and recorded is not None and recorded != inputs

    def cache_start(self, iteration: int, stage: str, size: int) -> int:
        """The size of the stage's cache file when the stage first started (``size`` the first time).

        Saved at once, so a run killed mid-stage still knows where that stage's paid answers begin;
        kept across a redo, so a redone stage counts every attempt.
        """
        starts = self.starts.setdefault(str(iteration), {})
        if stage not in starts:
            starts[stage] = size
            self.save()
        return starts[stage]

    def undo(self, iteration: int, stage: str) -> None:
        """Forget that ``stage`` of ``iteration`` finished (its inputs changed), with its report."""
        it = str(iteration)
        if stage in self.done.get(it, []):
            self.done[it].remove(stage)
        self.reports.get(it, {}).pop(stage, None)
        self.inputs.get(it, {}).pop(stage, None)
        self.save()

    def finished_iterations(self) -> int:
        n = 0
        while "pools" in self.done.get(str(n + 1), []):
            n += 1
        return n
