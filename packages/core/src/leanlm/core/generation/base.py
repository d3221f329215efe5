"""What every backend implements: ``run(requests, params, on_result)``.

``on_result`` is called once per request, in completion order, always from the thread that
called ``run``; the runner uses it to append the record to the JSONL output and tick the progress
bar, so a crash loses at most the requests still in flight.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from leanlm.core.generation.types import BackendStats, GenerationRequest, GenerationResult, SamplingParams

OnResult = Callable[[GenerationResult], None]


class Backend(ABC):
    name: str = "backend"

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abstractmethod
    def run(self, requests: Sequence[GenerationRequest], params: SamplingParams, on_result: OnResult) -> None:
        """Answer every request, calling ``on_result`` once for each (``ok=False`` for a failure).

        Raises ``UserError`` for problems no retry can fix (bad key, unknown model); results
        already passed to ``on_result`` stay valid.
        """

    def preflight(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Fail fast (a ``UserError``) when the backend cannot work at all, e.g. an unreachable server.

        ``generate`` calls it before it shows progress, so such a run ends in one line.
        """

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release resources (connections, models); the default has none."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
