"""The lm-eval bridge: every local task loads and scores an oracle exactly; a real model runs offline."""

import pytest

from leanlm.core.errors import UserError
from leanlm.core.evaluation import LM_EVAL_TASKS, build_tasks, evaluate_lm, run_lm_eval
from leanlm.core.evaluation.lm_eval_bridge import gsm8k_filter

ALL = ["mmlu", "piqa", "hellaswag", "winogrande", "arc_challenge", "boolq", "social_i_qa", "openbookqa"]
ALL += ["gsm8k"]


def _oracle(right: bool):
    """An lm-eval LM that knows each document's label: it scores the gold choice highest (or lowest)."""
    from lm_eval.api.model import LM

    class Oracle(LM):
        def loglikelihood(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                gold = r.idx == r.doc["label"]
                out.append((0.0 if gold == right else -50.0, False))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                answer = r.doc["answer"] if right else r.doc["answer"] + "1"
                # vary the answer's form; the extraction must cope with each
                forms = [f"Some steps.\n#### {answer}", f"So the answer is {answer}.", f"I think {answer}"]
                out.append(forms[r.doc_id % 3])
            return out

    return Oracle()


@pytest.fixture(scope="module")
def task_root():
    # the shared cache under $LEANLM_HOME: built once, reused (with lm-eval's dataset cache) later
    return build_tasks(ALL)


def test_covers_the_issue_tasks():
    assert sorted(LM_EVAL_TASKS) == sorted(ALL)


def test_every_task_loads_and_scores_an_oracle(task_root):
    right = evaluate_lm(_oracle(True), ALL, limit=2, root=task_root)
    wrong = evaluate_lm(_oracle(False), ALL, limit=2, root=task_root)
    for task in ALL:
        metric = "exact_match" if task == "gsm8k" else "acc"
        assert right[task][metric] == 1.0, (task, right[task])
        assert wrong[task][metric] == 0.0, (task, wrong[task])
        expected_n = 2 * 57 if task == "mmlu" else 2
        assert right[task]["n"] == expected_n
    assert right["piqa"]["acc_norm"] == 1.0


def test_mmlu_prompt_is_subject_five_shot(task_root):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(task_root), include_defaults=False)
    task = tm.load(["leanlm_mmlu_anatomy"])["tasks"]["leanlm_mmlu_anatomy"]
    assert task.config.num_fewshot == 5
    doc = task.test_docs()[0]
    ctx = task.fewshot_context(doc, 5)
    assert ctx.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert ctx.count("\nAnswer:") == 6 and ctx.endswith("\nAnswer:")


def test_gsm8k_filter():
    assert gsm8k_filter([["#### 5", "no number"], ["The answer is $1,000."]], [{}, {}]) == [
        ["5", "[invalid]"],
        ["1000"],
    ]


def test_unknown_task():
    with pytest.raises(UserError, match="unknown lm-eval task"):
        run_lm_eval(None, None, ["piqa", "nonsense"])


def test_tiny_model_runs_offline(tiny_model, tokenizer, task_root, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the bridge must set it itself
    res = run_lm_eval(tiny_model, tokenizer, ["piqa", "arc_challenge"], limit=8, batch_size=8, root=task_root)
    for task in ("piqa", "arc_challenge"):
        assert res[task]["n"] == 8
        assert 0.0 <= res[task]["acc"] <= 1.0 and 0.0 <= res[task]["acc_norm"] <= 1.0
