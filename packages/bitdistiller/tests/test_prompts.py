"""The prompts, defined once: exact text, HumanEval's prompt field verbatim, the same for teacher data and eval."""

from __future__ import annotations

from leanlm.bitdistiller.data import teacher_prompts
from leanlm.bitdistiller.evaluate import humaneval_requests
from leanlm.bitdistiller.prompts import alpaca_prompt, alpaca_template, code_prompt, math_prompt
from leanlm.core.datasets import load_records

HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


def test_alpaca_template_ends_at_response_without_newline():
    # Stanford Alpaca's no-input prompt, as the original BitDistiller sends it (no newline after "Response:")
    assert alpaca_template("Add 2 and 3.") == f"{HEAD}\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:"
    assert (
        math_prompt("What is 2+3?")
        == f"{HEAD}\n\n### Instruction:\nWhat is 2+3?\n\n### Response: Let's think step by step."
    )
    assert alpaca_prompt("Sort these.", "3 1 2") == "Sort these.\n3 1 2\n"
    assert alpaca_prompt("Say hi.") == "Say hi.\n"


def test_code_prompt_keeps_the_problem_text_verbatim():
    problem = 'def add(a, b):\n    """Return a + b."""\n'
    assert code_prompt(problem) == (
        f"{HEAD}\n\n### Instruction:\nCreate a Python script for this problem:\n{problem}\n\n### Response:"
    )
    assert "\t" not in code_prompt(problem)  # 4-space indents stay: HumanEval's prompt text as it ships


def test_teacher_data_and_evaluation_send_the_same_humaneval_prompt():
    problems = load_records("humaneval", limit=3)
    assert all("    " in p["prompt"] for p in problems)  # indented problems: the tab question is real
    evaluated = {r["id"]: r["prompt"] for r in humaneval_requests(problems)}
    taught = {r["id"]: r["prompt"] for r in teacher_prompts("code")}
    for p in problems:
        assert evaluated[p["id"]] == taught[p["id"]] == code_prompt(p["prompt"])
        assert p["prompt"] in evaluated[p["id"]]
