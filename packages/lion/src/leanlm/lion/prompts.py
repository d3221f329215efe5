"""The texts Lion sends to its three API roles (teacher, referee, generator), written for leanlm.

Every prompt is a list of chat messages, so one text works on an OpenAI-compatible server and on a
local chat model (the ``hf`` backend applies the tokenizer's chat template). The student never sees
these: it is trained and queried in the bare ``### Instruction / ### Response`` format
(``student_prompt``).
"""

from __future__ import annotations

from leanlm.core.templates import format_prompt

Messages = list[dict[str, str]]

TEACHER_SYSTEM = (
    "You are a capable assistant. Carry out the task the user describes and reply with the result only."
)

REFEREE_SYSTEM = "You judge the quality of answers to a task fairly, strictly and consistently."

# The two closing lines are the whole contract with ``referee.parse_scores``.
REFEREE_RULES = (
    "Two assistants answered the task above. Judge each answer on helpfulness, relevance, accuracy and "
    "level of detail, and give each an overall mark from 1 (useless) to 10 (excellent). The order in "
    "which the answers appear says nothing about their quality; do not let it sway you, and do not "
    "reward length for its own sake.\n"
    "First write a short justification in one paragraph that starts with 'Reasons:'. Then end your "
    "reply with exactly these two lines and nothing after them:\n"
    "Score of answer 1: <mark>\n"
    "Score of answer 2: <mark>"
)

GENERATOR_SYSTEM = "You write new tasks for training an assistant. Reply with the new task only."

_HARD_BRIEF = (
    "I will show you one task that was written for an AI assistant. Write one new task that draws its "
    "idea from the shown task: keep it in the same subject area and of the same kind, about as long "
    "and about as difficult. A person must be able to understand and answer it. Reply with the new "
    "task alone: no title, no numbering, no remarks, and never the markers '#Shown Task#' or '#New Task#'."
)

_EASY_BRIEF = (
    "I will show you one task that was written for an AI assistant. Write one new task in the same "
    "subject area but about a less common, more unusual corner of it, and of a different kind than the "
    "shown task, so that a collection of such tasks covers the long tail of the area. A person must "
    "be able to understand and answer it; keep it about as long as the shown task. Reply with the new "
    "task alone: no title, no numbering, no remarks, and never the markers '#Shown Task#' or '#New Task#'."
)

GENERATOR_BRIEFS = {"hard": _HARD_BRIEF, "easy": _EASY_BRIEF}
GENERATOR_MARKERS = ("#Shown Task#", "#New Task#")


def task_text(instruction: str, input: str | None = None) -> str:
    """The task as a person reads it: the instruction, then its input (if any) after a blank line."""
    return f"{instruction}\n\n{input}" if input else instruction


def teacher_messages(instruction: str, input: str | None = None) -> Messages:
    return [
        {"role": "system", "content": TEACHER_SYSTEM},
        {"role": "user", "content": task_text(instruction, input)},
    ]


def referee_messages(instruction: str, input: str | None, answer_1: str, answer_2: str) -> Messages:
    """Ask for two marks. Unlike the original, the task's ``input`` is shown too: answers depend on it."""
    body = (
        f"[Task]\n{task_text(instruction, input)}\n\n"
        f"[Answer 1 begins]\n{answer_1}\n[Answer 1 ends]\n\n"
        f"[Answer 2 begins]\n{answer_2}\n[Answer 2 ends]\n\n"
        f"[What to do]\n{REFEREE_RULES}"
    )
    return [{"role": "system", "content": REFEREE_SYSTEM}, {"role": "user", "content": body}]


def generator_messages(kind: str, seed_instruction: str) -> Messages:
    """One seed per request (as in the original); ``kind`` is ``hard`` or ``easy``."""
    body = f"{GENERATOR_BRIEFS[kind]}\n\n#Shown Task#:\n{seed_instruction}\n\n#New Task#:"
    return [{"role": "system", "content": GENERATOR_SYSTEM}, {"role": "user", "content": body}]


def student_prompt(instruction: str, input: str | None = None) -> str:
    """The student's format for training and inference: ``### Instruction:\\n...\\n\\n### Response:\\n``."""
    return format_prompt("instruction_response", instruction, input) + "\n"
