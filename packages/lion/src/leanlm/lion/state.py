"""The run directory's state file: which stages of which iteration are done, and their reports.

``state.json`` is rewritten atomically after every stage, so a crash leaves the last finished stage
recorded. The stage outputs themselves live in resumable cache files; the state only saves
re-doing work that is not cached per request (training) and keeps each stage's first report (a
replayed stage costs nothing and would report zero requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import read_json, write_json

STATE_VERSION = 1
STAGES = ("teacher", "train", "infer", "referee", "discriminate", "generate_hard", "generate_easy", "pools")


@dataclass
class RunState:
    path: Path
    config: dict[str, Any]
    done: dict[str, list[str]] = field(default_factory=dict)  # iteration -> finished stages
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # iteration -> stage -> report

    @classmethod
    def open(
        cls, run_dir: Path, config: dict[str, Any], mutable: tuple[str, ...] = ("iterations",)
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
        return cls(path, merged, data.get("done") or {}, data.get("reports") or {})

    def save(self) -> None:
        write_json(
            self.path,
            {"version": STATE_VERSION, "config": self.config, "done": self.done, "reports": self.reports},
        )

    def is_done(self, iteration: int, stage: str) -> bool:
        return stage in self.done.get(str(iteration), [])

    def report(self, iteration: int, stage: str) -> dict[str, Any] | None:
        return self.reports.get(str(iteration), {}).get(stage)

    def mark_done(self, iteration: int, stage: str, report: dict[str, Any]) -> None:
        it = str(iteration)
        if stage not in self.done.setdefault(it, []):
            self.done[it].append(stage)
            self.reports.setdefault(it, {})[stage] = report
        self.save()

    def finished_iterations(self) -> int:
        n = 0
        while "pools" in self.done.get(str(n + 1), []):
            n += 1
        return n
