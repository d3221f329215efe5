"""Running a stage of an iteration so that a resumed run replays it: one protocol for every stage.

A stage is a ``Step``: its name, a digest of its inputs, and ``run`` (the work, returning its value
and its report). ``Iteration.stage(step)`` then

1. redoes a finished stage whose inputs changed since it ran (its ``stale`` outputs set aside) and
   one that finished with allowed failures (to ask the failed requests again);
2. returns ``replay()`` for a finished stage that has one: work no per-request cache keeps (training);
3. otherwise calls ``run()``: API stages answer from their cache files (nothing is paid twice), the
   bookkeeping stages rewrite their outputs from their inputs;
4. records the first report and the inputs' digest in the state file (a replay reports nothing new);
   with a ``cache``, ``report["paid"]`` counts the answers recorded there over every attempt.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.generation import usage_since
from leanlm.lion.stages import StageReport
from leanlm.lion.state import RunState

log = logging.getLogger(__name__)


@dataclass
class Step:
    """One stage of an iteration, as the run directory records it."""

    name: str
    inputs: str  # digest of everything the result depends on
    run: Callable[[], tuple[Any, StageReport | dict[str, Any]]]  # (value, report)
    cache: Path | None = None  # the stage's file of paid answers
    stale: Sequence[Path] = ()  # outputs made from the inputs: set aside when they changed
    replay: Callable[[], Any] | None = None  # a finished stage's value without redoing its work


def set_aside(path: Path) -> None:
    """Move ``path`` (a folder or file made from stale inputs) to ``<name>.stale``, replacing an older one."""
    if not path.exists():
        return
    stale = path.with_name(path.name + ".stale")
    if stale.is_dir():
        shutil.rmtree(stale)
    elif stale.exists():
        stale.unlink()
    path.rename(stale)


class Iteration:
    """Runs the stages of iteration ``i`` against a RunState; outputs go to ``folder``."""

    def __init__(self, state: RunState, i: int, folder: Path):
        self.state, self.i, self.dir = state, i, folder
        self.dir.mkdir(parents=True, exist_ok=True)

    def stage(self, step: Step) -> Any:
        """Run, replay or redo ``step`` (see the module docstring); returns its value."""
        state, i = self.state, self.i
        if state.inputs_changed(i, step.name, step.inputs):
            log.info("iteration %d: the inputs of %s changed since it ran; redoing it", i, step.name)
            state.undo(i, step.name)
            for path in step.stale:  # made from other inputs: never resume or replay them
                set_aside(path)
        if (state.report(i, step.name) or {}).get("failed_count"):  # finished with allowed failures:
            state.undo(i, step.name)  # ask the failed ones again and report afresh
        if state.is_done(i, step.name) and step.replay is not None:
            return step.replay()
        start = None
        if step.cache is not None and not state.is_done(i, step.name):
            start = state.cache_start(i, step.name, step.cache.stat().st_size if step.cache.exists() else 0)
        value, report = step.run()
        if not state.is_done(i, step.name):
            report = report.as_dict() if isinstance(report, StageReport) else dict(report)
            if start is not None:
                report["paid"] = usage_since(step.cache, start)
            state.mark_done(i, step.name, report, step.inputs)
        return value
