"""Each console script end to end on tiny_llama, resumability, and one-line user errors."""

import json
import os
import shutil
import subprocess

import pytest

from leanlm.bita import cli
from leanlm.core.console import run_cli


def call(component, name, *argv):
    return run_cli(component, name, [str(a) for a in argv])


def user_error(capsys, component, name, *argv):
    with pytest.raises(SystemExit) as e:
        call(component, name, *argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{name}: error:")
    return err[-1]


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir, tmp_path_factory):
    """gen-prompts -> gen-outputs -> train on tiny_llama; returns the paths."""
    d = tmp_path_factory.mktemp("pipe")
    src = d / "instructions.jsonl"
    rows = [
        {"id": f"i{i}", "instruction": f"Say something about the number {i}.", "input": ""} for i in range(4)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = call(
        cli.gen_prompts,
        "bita-gen-prompts",
        "--data",
        src,
        "--output",
        d / "prompts.jsonl",
        "--model",
        tiny_model_dir,
        "--template",
        "llama2_chat",
        "--style",
        "both",
    )
    assert out["prompts"] == 8
    res = call(
        cli.gen_outputs,
        "bita-gen-outputs",
        "--prompts",
        d / "prompts.jsonl",
        "--output",
        d / "data.jsonl",
        "--model",
        tiny_model_dir,
        "--max_new_tokens",
        24,
        "--batch_size",
        4,
    )
    assert res["answers"] == 8 and res["failed"] == 0
    tr = call(
        cli.train,
        "bita-train",
        "--data",
        d / "data.jsonl",
        "--model",
        tiny_model_dir,
        "--output_dir",
        d / "adapter",
        "--num_prefix",
        4,
        "--max_steps",
        2,
        "--batch_size",
        4,
        "--grad_accum",
        1,
    )
    assert tr["steps"] == 2
    return d


def test_gen_prompts_templates(pipeline):
    rows = [json.loads(line) for line in (pipeline / "prompts.jsonl").read_text().splitlines()]
    full = next(r for r in rows if r["template_tag"] == "full")
    short = next(r for r in rows if r["template_tag"] == "short" and r["id"] == "i0-short")
    assert full["prompt"].startswith("[INST] <<SYS>>") and full["prompt"].endswith("[/INST]")
    assert short["prompt"] == "[INST] Say something about the number 0. [/INST]"
    assert len({r["id"] for r in rows}) == 8


def test_gen_outputs_one_merged_resumable_file(pipeline, tiny_model_dir):
    lines = (pipeline / "data.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["ok"] for x in lines)
    res = call(
        cli.gen_outputs,
        "bita-gen-outputs",
        "--prompts",
        pipeline / "prompts.jsonl",
        "--output",
        pipeline / "data.jsonl",
        "--model",
        tiny_model_dir,
        "--max_new_tokens",
        24,
    )
    assert res["stats"]["requests"] == 0  # everything was done: nothing re-requested
    assert len((pipeline / "data.jsonl").read_text().splitlines()) == 8


def test_train_writes_adapter(pipeline):
    cfg = json.loads((pipeline / "adapter" / "bita_config.json").read_text())
    assert cfg["num_prefix"] == 4 and cfg["num_masks"] == 3 and os.path.isdir(cfg["base_model"])
    assert (pipeline / "adapter" / "adapter.safetensors").exists()


def test_eval_and_generate(pipeline, tiny_model_dir):
    q = pipeline / "questions.jsonl"
    rows = [
        {"question_id": 1, "category": "writing", "turns": ["Write one line about rain."]},
        {"question_id": 2, "category": "math", "turns": ["What is 3 + 4?"]},
        {"question_id": 3, "category": "math", "turns": ["What is 5 * 6?"]},
    ]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = call(
        cli.evaluate,
        "bita-eval",
        "--data",
        q,
        "--adapter",
        pipeline / "adapter",
        "--output_dir",
        pipeline / "eval",
        "--max_new_tokens",
        12,
        "--tree",
        "tri:3;1-1-1",
        "--template",
        "alpaca",
        "--pld_tokens",
        3,
    )
    report = json.loads((pipeline / "eval" / "speed.json").read_text())
    assert set(report["methods"]) == {"greedy", "pld", "bita[3-2-1]", "bita[1-1-1]"}
    for name in ("pld", "bita[3-2-1]", "bita[1-1-1]"):
        assert out[name]["equal_outputs"] == 1.0
    assert set(report["methods"]["bita[3-2-1]"]["categories"]) == {"writing", "math"}
    for name in ("pld", "bita[3-2-1]", "bita[1-1-1]"):  # fp32: no divergence, so no tie either
        assert report["equality"][name]["identical"] == 1.0 and report["equality"][name]["divergences"] == []
    assert "identical up to ties" in (pipeline / "eval" / "speed.md").read_text()
    assert (pipeline / "eval" / "speed.md").read_text().count("bita[") >= 2
    res = call(
        cli.generate,
        "bita-generate",
        "--prompts",
        q,
        "--adapter",
        pipeline / "adapter",
        "--output",
        pipeline / "answers.jsonl",
        "--max_new_tokens",
        12,
        "--template",
        "alpaca",
    )
    assert res["answers"] == 3
    runs = json.loads((pipeline / "eval" / "runs.json").read_text())
    answers = [json.loads(x) for x in (pipeline / "answers.jsonl").read_text().splitlines()]
    assert [a["new_tokens"] for a in answers] == [r["new_tokens"] for r in runs["greedy"]]


def test_eval_second_turn(pipeline, tiny_model, tokenizer, capsys):
    """--turns 2: MT-Bench's second turn runs after greedy's first answer, for every method."""
    import torch

    from leanlm.core.templates import format_conversation

    q = pipeline / "two_turns.jsonl"
    rows = [
        {"question_id": 7, "category": "writing", "turns": ["Name a fruit.", "Now name a colour."]},
        {"question_id": 8, "category": "qa", "turns": ["Who wrote Hamlet?"]},
    ]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--data", q, "--adapter", pipeline / "adapter", "--max_new_tokens", 10, "--tree", "1-1"]
    out = call(
        cli.evaluate,
        "bita-eval",
        *args,
        "--template",
        "alpaca",
        "--output_dir",
        pipeline / "eval2",
        "--turns",
        2,
    )
    runs = json.loads((pipeline / "eval2" / "runs.json").read_text())
    assert [r["id"] for r in runs["greedy"]] == ["7", "7-turn2", "8"]
    assert out["bita[1-1]"]["equal_outputs"] == 1.0 and out["pld"]["equal_outputs"] == 1.0
    first, second = runs["greedy"][0]["output_ids"], runs["greedy"][1]["output_ids"]
    answer = tokenizer.decode([t for t in first if t != tokenizer.eos_token_id], skip_special_tokens=True)
    prompt = format_conversation("alpaca", rows[0]["turns"], [answer])
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    with torch.no_grad():
        ref = tiny_model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10
        )
    assert ref[0, ids.shape[1] :].tolist()[: len(second)] == second
    report = json.loads((pipeline / "eval2" / "speed.json").read_text())
    assert report["settings"]["turns"] == 2
    err = user_error(
        capsys, cli.evaluate, "bita-eval", *args, "--output_dir", pipeline / "eval3", "--turns", 0
    )
    assert "turns must be at least 1" in err


def test_user_errors(pipeline, tiny_model_dir, capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "no prompts" in user_error(
        capsys, cli.gen_outputs, "bita-gen-outputs", "--prompts", empty, "--model", tiny_model_dir
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "output": "b c d e f"}\n{not json\n')
    msg = user_error(capsys, cli.train, "bita-train", "--data", bad, "--model", tiny_model_dir)
    assert f"{bad}:2" in msg
    assert "not a known alias" in user_error(
        capsys, cli.train, "bita-train", "--data", pipeline / "data.jsonl", "--model", "no-such-model-xyz"
    )
    assert "num_masks" in user_error(
        capsys,
        cli.train,
        "bita-train",
        "--data",
        pipeline / "data.jsonl",
        "--model",
        tiny_model_dir,
        "--num_masks",
        0,
    )
    gen = ["--prompt", "hi", "--adapter", pipeline / "adapter", "--tree"]
    assert "widths" in user_error(capsys, cli.generate, "bita-generate", *gen, 0)
    assert "K" in user_error(capsys, cli.generate, "bita-generate", *gen, "tri:0")
    assert "levels" in user_error(capsys, cli.generate, "bita-generate", *gen, "1-1-1-1")
    # the old comma forms (fire reads them as tuples) are ambiguous and refused
    for bad in ("1,1", "1,", "3,2,1"):
        assert "commas are ambiguous" in user_error(capsys, cli.generate, "bita-generate", *gen, bad)
    assert "calibrat" in user_error(capsys, cli.generate, "bita-generate", *gen, "auto:8")
    assert "style" in user_error(
        capsys,
        cli.gen_prompts,
        "bita-gen-prompts",
        "--data",
        pipeline / "prompts.jsonl",
        "--style",
        "long",
        "--template",
        "alpaca",
        "--output",
        tmp_path / "p.jsonl",
    )


@pytest.mark.parametrize(
    "script", ["bita-gen-prompts", "bita-gen-outputs", "bita-train", "bita-eval", "bita-generate"]
)
def test_help(script):
    exe = shutil.which(script)
    assert exe, f"{script} is not installed"
    r = subprocess.run(
        [exe, "--help"], capture_output=True, text=True, env=os.environ | {"PAGER": "cat"}, timeout=120
    )
    text = r.stdout + r.stderr  # fire prints help to stderr when not on a terminal
    assert r.returncode == 0 and "--output" in text and "NAME" in text
    if script in ("bita-eval", "bita-generate"):  # the tree syntax is shown with examples
        assert "1-1" in text and "tri:5" in text and "auto:" in text


def test_calibrate_then_auto_tree(pipeline, capsys):
    """--calibrate writes calibration.json beside the adapter; --tree auto:N then uses it, losslessly."""
    q = pipeline / "calib_questions.jsonl"
    rows = [{"question_id": i, "category": "c", "turns": [f"Tell me about {w}."]} for i, w in enumerate("ab")]
    q.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--data", q, "--adapter", pipeline / "adapter", "--template", "alpaca", "--max_new_tokens", 10]
    res = call(cli.evaluate, "bita-eval", *common, "--calibrate", "--calibration_ranks", 4)
    saved = json.loads((pipeline / "adapter" / "calibration.json").read_text())
    assert saved["max_rank"] == 4 and saved["steps"] == res["steps"] > 0
    assert "auto:4" in res["auto_trees"]
    out = call(
        cli.evaluate, "bita-eval", *common, "--output_dir", pipeline / "eval_auto", "--tree", "auto:4;1"
    )
    assert out["bita[auto:4]"]["equal_outputs"] == 1.0 and out["bita[1]"]["equal_outputs"] == 1.0
    msg = user_error(capsys, cli.evaluate, "bita-eval", "--data", q, "--calibrate", "--model", pipeline)
    assert "--calibrate needs --adapter" in msg
