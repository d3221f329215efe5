from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["leanlm.core.testing.fixtures"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model: Any, tokenizer: Any) -> Path:
    """tiny_llama saved as a model folder (what the console scripts take as --model)."""
    folder = tmp_path_factory.mktemp("tiny") / "model"
    copy.deepcopy(tiny_model).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small teacher file of real text (prompt / response pairs)."""
    import json

    from leanlm.core.datasets import load_records

    rows = load_records("text", limit=24)
    path = tmp_path_factory.mktemp("teacher") / "teacher.jsonl"
    with path.open("w") as f:
        for r in rows:
            f.write(
                json.dumps({"id": r["id"], "prompt": r["text"][:60], "response": r["text"][60:300]}) + "\n"
            )
    return path
