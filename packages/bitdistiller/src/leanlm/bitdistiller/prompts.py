"""The prompts BitDistiller's teacher data and evaluations use, each defined once.

* ``alpaca_prompt``: an Alpaca record (instruction, input) as the original prompts with it: no
  template, ``"{instruction}\\n{input}\\n"``.
* ``alpaca_template``: core's Alpaca template (``leanlm.core.templates``) ending at ``### Response:``,
  as the original's (Stanford Alpaca's) prompt does; core's adds a newline after it, cut here.
* ``code_prompt``: HumanEval, the Alpaca template around "Create a Python script for this problem:"
  and the problem's ``prompt`` field verbatim (4-space indents, as HumanEval ships it: the original's
  evaluation turned them into tabs, its teacher data did not), for the teacher's ``code`` answers
  and for ``bitdistiller-eval-humaneval`` alike.
* ``math_prompt``: GSM8K, the MetaMath prompt: Alpaca template + " Let's think step by step.".
"""

from __future__ import annotations

from leanlm.core.templates import format_prompt


def alpaca_prompt(instruction: str, extra: str = "") -> str:
    """The original's instruction prompt, no template: ``"{instruction}\\n{input}\\n"`` (or ``"{instruction}\\n"``)."""
    return f"{instruction}\n{extra}\n" if extra else f"{instruction}\n"


def alpaca_template(instruction: str, suffix: str = "") -> str:
    """Alpaca (no input) up to ``### Response:`` with no newline, then ``suffix``."""
    return format_prompt("alpaca", instruction).removesuffix("\n") + suffix


def code_prompt(problem: str) -> str:
    """A HumanEval problem's ``prompt`` field (used verbatim) in the original's code instruction."""
    return alpaca_template(f"Create a Python script for this problem:\n{problem}")


def math_prompt(question: str) -> str:
    """A GSM8K question in the MetaMath prompt."""
    return alpaca_template(question, " Let's think step by step.")
