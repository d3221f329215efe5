"""A scripted stand-in for the API model, for tests and benchmarks on the loopback server.

``ScriptedTeacher`` answers an OpenAI-compatible request body the way each Lion role would, chosen by
the prompt's content: a referee prompt gets two marks, a generator prompt a new task, a student
prompt (``### Instruction:``) a weak answer, anything else a teacher answer. Answers depend only on
the request's content, so a resumed run must reproduce an uninterrupted one exactly.

Which instructions are hard is fixed by a hash: ``is_hard(instruction)`` (about half). The referee
marks the teacher 9 and the student 9 (easy) or 5 (hard), plus a +1 bias for whichever answer is
shown first: averaging both orders must cancel the bias and give gaps of exactly 0 or 4.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from leanlm.core.testing.fake_servers import request_key

_WORDS = [
    "river",
    "mountain",
    "orchard",
    "lantern",
    "harbor",
    "meadow",
    "compass",
    "quartz",
    "violin",
    "glacier",
    "ember",
    "canyon",
    "falcon",
    "pepper",
    "saddle",
    "thistle",
    "marble",
    "beacon",
    "cobalt",
    "prairie",
    "walnut",
    "tundra",
    "sparrow",
    "copper",
    "willow",
    "basalt",
    "juniper",
    "coral",
    "anvil",
    "ribbon",
    "summit",
    "cedar",
    "pebble",
    "nectar",
    "harvest",
    "lagoon",
    "ivory",
    "maple",
    "raven",
    "velvet",
]
_VERBS = [
    "Describe",
    "Explain",
    "Compare",
    "Summarize",
    "Plan",
    "Design",
    "Evaluate",
    "Outline",
    "Propose",
    "Analyze",
]


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:12], 16)


def is_hard(instruction: str) -> bool:
    return _h("hard:" + instruction.strip()) % 2 == 0


def _between(text: str, start: str, end: str) -> str:
    m = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.DOTALL)
    return m.group(1) if m else ""


class ScriptedTeacher:
    """Callable responder(body) -> text for ``leanlm.core.testing.fake_servers.FakeServer``.

    ``unparsable_first``: instructions whose first review (seed 0) is garbage; a retry (new seed) parses.
    ``unparsable_always``: instructions whose reviews never parse (they must end up reported).
    """

    def __init__(self, unparsable_first: set[str] = frozenset(), unparsable_always: set[str] = frozenset()):
        self.unparsable_first = set(unparsable_first)
        self.unparsable_always = set(unparsable_always)

    def __call__(self, body: dict[str, Any]) -> str:
        key = request_key(body) or ""
        if "[Answer 1 begins]" in key:
            return self.review(key, int(body.get("seed") or 0))
        if "#Shown Task#" in key:
            return self.new_task(key)
        if key.startswith("### Instruction:"):
            task = key.split("### Instruction:\n", 1)[1].split("\n\n### Response:")[0]
            return f"student says: {task[:40]}"
        return f"Teacher: a complete and careful answer to '{key[:60]}'."

    def review(self, prompt: str, seed: int) -> str:
        task = prompt.split("[Task]\n", 1)[1].split("\n\n[Answer 1 begins]")[0]
        instruction = task.split("\n\n")[0]
        if instruction in self.unparsable_always or (instruction in self.unparsable_first and seed == 0):
            return "Both answers have merits. I would rate them fairly similar overall."
        marks = []
        for n in (1, 2):
            answer = _between(prompt, f"[Answer {n} begins]", f"[Answer {n} ends]")
            mark = 9 if answer.startswith("Teacher:") or not is_hard(instruction) else 5
            marks.append(min(10, mark + (1 if n == 1 else 0)))  # position bias toward answer 1
        return (
            "Reasons: the first answer is complete; the second is shorter.\n"
            f"Score of answer 1: {marks[0]}\nScore of answer 2: {marks[1]}"
        )

    def new_task(self, prompt: str) -> str:
        seed = prompt.split("#Shown Task#:\n", 1)[1].split("\n\n#New Task#:")[0]
        kind = "hard" if "same subject area and of the same kind" in prompt else "easy"
        h = _h(kind + seed)
        if h % 10 == 0:
            return "Write an instruction about this."  # must be rejected by the rules
        w = [_WORDS[(h >> (6 * j)) % len(_WORDS)] for j in range(6)]
        return f"{_VERBS[h % len(_VERBS)]} the {w[0]} {w[1]} of a {w[2]} {w[3]} {w[4]} {w[5]}."
