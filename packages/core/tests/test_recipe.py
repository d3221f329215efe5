"""leanlm recipe: steps chained through their folders, resumable, one report over every model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from leanlm.core.errors import UserError
from leanlm.core.recipe import load_recipe, run_recipe

SCRIPT = str(Path(__file__).with_name("recipe_step_script.py"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_model, tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write(
    path: Path, model: Path, tag_b: str = "b", fail_b: bool = False, report: dict | None = None
) -> Path:
    recipe = {
        "name": "toy",
        "model": str(model),
        "report": report or {},
        "steps": [
            {"name": "first", "command": ["python", SCRIPT], "flags": {"tag": "a"}, "produces": "model"},
            {
                "name": "second",
                "command": ["python", SCRIPT],
                "produces": "model",
                "flags": {"tag": tag_b, "fail": fail_b, "model": "{steps.first.model}"},
            },
        ],
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _calls(run: Path) -> list[str]:
    return (run / "calls.txt").read_text().split("\n")[:-1] if (run / "calls.txt").exists() else []


def test_chain_resume_and_rerun_from_a_changed_step(tmp_path, tiny_folder):
    run = tmp_path / "run"
    recipe = _write(tmp_path / "r.yaml", tiny_folder)
    run_recipe(recipe, run, evaluate=False)
    first_model = run / "1-first" / "model"
    assert _calls(run) == [f"a {tiny_folder}", f"b {first_model}"]  # step 2 got step 1's model
    run_recipe(recipe, run, evaluate=False)
    assert len(_calls(run)) == 2  # nothing changed: nothing ran
    run_recipe(_write(recipe, tiny_folder, tag_b="b2"), run, evaluate=False)
    assert _calls(run)[2:] == [f"b2 {first_model}"]  # only the changed step ran again
    assert (run / "2-second.stale").is_dir()  # its old folder set aside
    report = json.loads((run / "report.json").read_text())
    assert [s["ran"] for s in report["steps"][1:]] == [False, True]


def test_a_failed_step_stops_and_resumes_there(tmp_path, tiny_folder):
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"recipe step 2 \(second\) failed with exit code 3"):
        run_recipe(_write(tmp_path / "r.yaml", tiny_folder, fail_b=True), run, evaluate=False)
    run_recipe(_write(tmp_path / "r.yaml", tiny_folder), run, evaluate=False)
    assert [c.split()[0] for c in _calls(run)] == ["a", "b"]  # the first step was not run twice


def test_report_measures_every_model(tmp_path, tiny_folder):
    settings = {"seqlen": 64, "max_chunks": 2, "task": "piqa", "limit": 4, "speed_tokens": 4}
    report = run_recipe(_write(tmp_path / "r.yaml", tiny_folder, report=settings), tmp_path / "run")
    rows = json.loads((tmp_path / "run" / "report.json").read_text())["steps"]
    assert [r["step"] for r in rows] == ["start", "first", "second"]
    for r in rows:
        assert r["ppl"] > 1 and 0 <= r["piqa_acc"] <= 1 and r["decode_tok_s"] > 0
    assert rows[0]["weight_bytes"] is None or rows[1]["weight_bytes"] == rows[0]["weight_bytes"]
    assert rows[1]["ppl"] == rows[0]["ppl"]  # the same weights measure the same
    assert "| first |" in report.read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps: []", "non-empty 'steps'"),
        ("steps: [{flags: {}}]", "needs a 'command'"),
        ("steps: [{command: x, colour: red}]", "unknown keys"),
        ("steps: [{command: x}, {command: x}]", "step names must be unique"),
        ("steps: [{command: [x, y]", "not a valid recipe"),
    ],
)
def test_bad_recipes_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_recipe(path)


def test_unknown_placeholder(tmp_path, tiny_folder):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_folder),
                "steps": [{"command": ["python", SCRIPT], "flags": {"tag": "{steps.nope.model}"}}],
            }
        )
    )
    with pytest.raises(UserError, match="unknown placeholder"):
        run_recipe(path, tmp_path / "run", evaluate=False)


def test_packaged_recipes_parse_and_chain_through_folders():
    from leanlm.core.recipe import packaged_recipes

    assert "distill-quantize-accelerate" in packaged_recipes()
    for name in packaged_recipes():
        recipe = load_recipe(name)  # by name, as `leanlm recipe distill-quantize-accelerate`
        commands = [s.command[0] for s in recipe.steps]
        assert (
            commands[0] == "lion-iterate" and "bitdistiller-export" in commands and "bita-train" in commands
        )
    with pytest.raises(UserError, match="packaged recipes: distill-quantize-accelerate"):
        load_recipe("no-such-recipe")


def test_demo_compose_needs_the_three_methods(tmp_path, monkeypatch):
    from leanlm.core import demo

    monkeypatch.setattr(demo, "installed_methods", lambda: {"lion": None})
    with pytest.raises(UserError, match="needs leanlm-bitdistiller, leanlm-bita installed"):
        demo.run_compose(tmp_path)
