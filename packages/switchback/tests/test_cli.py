"""Each console script end to end on tiny_llama (in process through leanlm.core.console.run_cli), and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from leanlm.core.console import run_cli
from leanlm.core.records import read_jsonl
from leanlm.switchback.cli import bench_command, evaluate_command, finetune_command
from leanlm.switchback.stats import compare_logs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_model, tokenizer):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _finetune_args(tiny_dir, out, switchback: str, runs: int = 2) -> list[str]:
    return [
        "--model",
        str(tiny_dir),
        "--dataset",
        "instructions",
        "--limit",
        "12",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--target-max-len",
        "24",
        "--num-runs",
        str(runs),
        "--switchback",
        switchback,
        "--output-dir",
        str(out),
    ]


@pytest.fixture(scope="module")
def finetune_logs(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    logs = {}
    for flag in ("false", "true"):
        out = root / f"sb_{flag}"
        run_cli(finetune_command, "switchback-finetune", _finetune_args(tiny_dir, out, flag))
        logs[flag] = out
    return logs


def test_finetune_logs_runs_both_ways(finetune_logs):
    linear = read_jsonl(finetune_logs["false"] / "finetune_log.jsonl")
    sb = read_jsonl(finetune_logs["true"] / "finetune_log.jsonl")
    assert [r["id"] for r in linear] == ["linear-run0", "linear-run1"]
    assert [r["id"] for r in sb] == ["global-run0", "global-run1"]
    assert all(r["steps"] == 2 and r["seconds"] > 0 and len(r["losses"]) == 2 for r in linear + sb)
    assert sb[0]["swapped_layers"] == 20 and linear[0]["swapped_layers"] == 0
    # same seed, same data: the int8 run starts from the same model, so its first loss is close
    assert abs(sb[0]["losses"][0][1] - linear[0]["losses"][0][1]) < 0.05
    # the saved model is a plain LlamaForCausalLM (layers unswapped) and loads back
    config = json.loads((finetune_logs["true"] / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_finetune_resumes_without_repeating_runs(finetune_logs, tiny_dir):
    out = finetune_logs["false"]
    before = (out / "finetune_log.jsonl").read_text()
    summary = run_cli(finetune_command, "switchback-finetune", _finetune_args(tiny_dir, out, "false"))
    assert (out / "finetune_log.jsonl").read_text() == before  # both runs were already logged
    assert summary.count("linear-run") == 2


def test_stats_cli_on_finetune_logs(finetune_logs, tmp_path):
    args = [
        "--file1",
        str(finetune_logs["false"] / "finetune_log.jsonl"),
        "--file2",
        str(finetune_logs["true"] / "finetune_log.jsonl"),
        "--alpha",
        "0.05",
        "--output-dir",
        str(tmp_path),
    ]
    md = run_cli(compare_logs, "switchback-stats", args)
    assert "Welch t" in md
    assert (tmp_path / "t_distribution.png").stat().st_size > 5000
    assert json.loads((tmp_path / "statistical_results.json").read_text())["n1"] == 2


def test_bench_cli_tiny(tiny_dir, tmp_path):
    args = [
        "--output-dir",
        str(tmp_path),
        "--widths",
        "64,128",
        "--tokens",
        "32",
        "--modes",
        "linear-fp32,linear-bf16,switchback-bf16,memeff-bf16",
        "--step-models",
        str(tiny_dir),
        "--step-modes",
        "fp32,bf16,switchback-bf16",
        "--batch",
        "2",
        "--seq",
        "16",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--loss-steps",
        "1",
    ]
    run_cli(bench_command, "switchback-bench", args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["layers"]) == 2 * 4 and all(r["ms"] > 0 for r in results["layers"])
    assert [r["mode"] for r in results["train_step"]] == ["fp32", "bf16", "switchback-bf16"]
    assert all(r["ms"] > 0 and r["loss"] > 0 for r in results["train_step"])
    md = (tmp_path / "results.md").read_text()
    assert "switchback-bf16 vs bf16" in md and (tmp_path / "layers.png").exists()


def test_eval_cli_tiny(tiny_dir, tmp_path):
    pytest.importorskip("lm_eval")
    args = [
        "--model",
        str(tiny_dir),
        "--tasks",
        "boolq",
        "--limit",
        "4",
        "--batch-size",
        "4",
        "--switchback",
        "true",
        "--output-dir",
        str(tmp_path),
    ]
    text = run_cli(evaluate_command, "switchback-eval", args)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["switchback"] is True and results["results"]["boolq"]["n"] == 4
    assert 0.0 <= results["results"]["boolq"]["acc"] <= 1.0 and "boolq: acc=" in text


def _fails(capsys, component, name, args) -> str:
    with pytest.raises(SystemExit) as exc:
        run_cli(component, name, args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{name}: error: ")
    return err[0]


def test_bad_input_gives_one_clear_error(capsys, tmp_path, tiny_dir):
    msg = _fails(
        capsys,
        finetune_command,
        "switchback-finetune",
        ["--model", str(tiny_dir), "--variant", "int4", "--output-dir", str(tmp_path)],
    )
    assert "unknown SwitchBack variant 'int4'" in msg
    msg = _fails(
        capsys,
        compare_logs,
        "switchback-stats",
        ["--file1", str(tmp_path / "nope.jsonl"), "--file2", str(tmp_path / "nope2.jsonl")],
    )
    assert "no such log file" in msg
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"id": "linear-run0", "seconds": 3.0}) + "\n")
    msg = _fails(capsys, compare_logs, "switchback-stats", ["--file1", str(one), "--file2", str(one)])
    assert "at least 2 runs" in msg
    msg = _fails(
        capsys,
        finetune_command,
        "switchback-finetune",
        ["--model", str(tiny_dir), "--dataset", str(tmp_path / "missing.jsonl")],
    )
    assert "missing.jsonl" in msg


def test_installed_console_scripts_answer_help():
    for name in ("switchback-finetune", "switchback-bench", "switchback-stats", "switchback-eval"):
        exe = shutil.which(name)
        if exe is None:
            pytest.skip(f"{name} is not on PATH")
        proc = subprocess.run(
            [exe, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "PAGER": "cat"}
        )
        assert proc.returncode == 0 and "NAME" in proc.stdout + proc.stderr
