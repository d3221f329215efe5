"""Data sources, bad input, and each console script end to end on tiny_llama."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from leanlm.core.errors import UserError
from leanlm.dllm.data import load_examples


def _write(path, obj):
    path.write_text(json.dumps(obj))


@pytest.fixture
def piqa_folder(tmp_path):
    folder = tmp_path / "piqa"
    folder.mkdir()
    rows = [
        {"goal": f"open jar {i}", "sol1": "twist the lid", "sol2": "eat the lid", "answer": 1}
        for i in range(6)
    ]
    _write(folder / "train.json", rows)
    _write(folder / "test.json", rows[:2])
    # like the original template: it names {input}, which piqa records do not have
    _write(folder / "prompt.json", {"prompt": "Goal: {goal}\n{input}1) {sol1}\n2) {sol2}\nAnswer:"})
    return folder


def test_piqa_template_with_input_placeholder_works(piqa_folder):
    ex = load_examples(piqa_folder, "train")
    assert ex[0].prompt == "Goal: open jar 0\n1) twist the lid\n2) eat the lid\nAnswer:"
    assert ex[0].response == "1" and ex[0].num_choices == 2 and ex[0].label == 0


def test_alpaca_folder_and_offline_tasks(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    _write(
        folder / "train.json",
        [
            {"instruction": "Add 1 and 2.", "input": "", "output": "3"},
            {"instruction": "Translate", "input": "hola", "output": "hello"},
        ],
    )
    ex = load_examples(folder, "train")
    assert "### Instruction:\nAdd 1 and 2." in ex[0].prompt and "### Input:\nhola" in ex[1].prompt
    boolq = load_examples("boolq", "train", limit=3, test_size=50)
    assert boolq[0].num_choices == 2 and boolq[0].response in {"1", "2"}
    test_ids = {e.prompt for e in load_examples("boolq", "test", test_size=50)}
    assert len(test_ids) == 50 and not test_ids & {
        e.prompt for e in load_examples("boolq", "train", limit=400, test_size=50)
    }
    gsm = load_examples("gsm8k", "train", limit=1)
    assert gsm[0].num_choices == 0 and gsm[0].response


def test_missing_field_is_one_clear_error(tmp_path, piqa_folder):
    _write(piqa_folder / "train.json", [{"goal": "x", "sol1": "a", "answer": 1}])
    with pytest.raises(UserError, match=r"train.json: record 0: missing field\(s\) sol2"):
        load_examples(piqa_folder, "train")
    with pytest.raises(UserError, match="unknown data source"):
        load_examples("no_such_task", "train")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from leanlm.core.models import load_tokenizer
    from leanlm.core.testing.tiny_models import tiny_llama

    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(folder)
    load_tokenizer("default").save_pretrained(folder)
    return folder


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run(script, *args):
    """Run a console script in-process (a subprocess would re-import transformers for every call)."""
    from leanlm.core.console import run_cli
    from leanlm.dllm import cli

    component = {"dllm-finetune": cli.finetune, "dllm-chat": cli.chat, "dllm-eval": cli.evaluate}[script]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_cli(component, script, [str(a) for a in args])
        except SystemExit as e:
            code = e.code or 0
    return Result(code, out.getvalue(), err.getvalue())


def test_help_from_the_installed_script():
    r = subprocess.run(
        [f"{sys.prefix}/bin/dllm-eval", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PAGER": "cat", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0 and "--metric" in r.stdout + r.stderr


def test_console_scripts_on_tiny_llama(tiny_dir, piqa_folder, tmp_path):
    out = tmp_path / "run"
    r = _run(
        "dllm-finetune",
        piqa_folder,
        "--model",
        tiny_dir,
        "--output",
        out,
        "--max_steps",
        3,
        "--batch_size",
        2,
        "--start_layer",
        1,
        "--router_lr",
        0.01,
        "--ratio_scope",
        "batch",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "dllm" / "routers.safetensors").exists()
    assert json.loads((out / "dllm" / "dllm_config.json").read_text())["dllm"]["ratio_scope"] == "batch"
    r = _run(
        "dllm-chat",
        "--dllm",
        out / "dllm",
        "--model",
        tiny_dir,
        "--instructs",
        "['Say hi.', 'Count to 3.']",
        "--max_new_tokens",
        5,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("### Instruction:") == 2 and "Count to 3." in r.stdout and "exec ratio" in r.stdout
    r = _run("dllm-chat", "--dllm", out / "dllm", "--model", tiny_dir, "--max_new_tokens", 3)
    assert r.returncode == 0 and r.stdout.count("### Instruction:") == 3  # the default instructions
    res = tmp_path / "eval.json"
    r = _run("dllm-eval", "--dllm", out / "dllm", "--model", tiny_dir, "--data", piqa_folder, "--output", res)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(res.read_text())
    assert result["examples"] == 2 and 0 <= result["accuracy"] <= 1 and 0 < result["flops_ratio"] <= 1.1
    r = _run(
        "dllm-eval",
        "--dllm",
        out / "dllm",
        "--model",
        tiny_dir,
        "--data",
        "piqa",
        "--choice_format",
        "text",
        "--limit",
        4,
        "--output",
        res,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(res.read_text())
    assert result["examples"] == 4 and 0 <= result["accuracy_norm"] <= 1 and result["answer_nll"] > 0
    r = _run(
        "dllm-eval",
        "--dllm",
        out / "dllm",
        "--model",
        tiny_dir,
        "--data",
        "piqa",
        "--choice_format",
        "letter",
    )
    assert r.returncode == 2 and "choice_format must be one of number, text" in r.stderr


def test_console_scripts_bad_input(tiny_dir, tmp_path):
    r = _run("dllm-finetune", "piqa", "--model", tiny_dir, "--target", 1.5)
    assert (
        r.returncode == 2 and "target" in r.stderr and "(0, 1]" in r.stderr
    )  # checked by core before fire runs
    assert len(r.stderr.strip().splitlines()) == 1
    r = _run("dllm-finetune", "piqa", "--model", tiny_dir, "--ratio_scope", "sequence")
    assert r.returncode == 2 and "ratio_scope must be 'token' or 'batch'" in r.stderr
    r = _run("dllm-finetune", "piqa", "--model", tiny_dir, "--start_layer", 9, "--limit", 4)
    assert r.returncode == 2 and "beyond the model's depth" in r.stderr
    r = _run("dllm-chat", "--dllm", tmp_path, "--model", tiny_dir)
    assert r.returncode == 2 and "not a D-LLM folder" in r.stderr
    r = _run("dllm-eval", "--dllm", tmp_path, "--model", tiny_dir, "--metric", "bleu")  # before any loading
    assert r.returncode == 2 and "--metric must be auto, accuracy or perplexity, got 'bleu'" in r.stderr
