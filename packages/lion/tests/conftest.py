from __future__ import annotations

from pathlib import Path

import pytest

from leanlm.core.records import write_jsonl

pytest_plugins = ["leanlm.core.testing"]


def make_pool(n: int, start: int = 0) -> list[dict]:
    """Distinct instructions; some with an input, to check it is carried through every stage."""
    topics = ["volcanoes", "tax law", "sorting", "poetry", "tides", "chess", "bread", "orbits", "vaccines", "jazz"]
    pool = []
    for i in range(start, start + n):
        rec = {"instruction": f"Task {i}: explain {topics[i % len(topics)]} to a student in case {i * 37 % 101}."}
        if i % 4 == 0:
            rec["input"] = f"context number {i}"
        pool.append(rec)
    return pool


@pytest.fixture
def pool_file(tmp_path: Path) -> Path:
    path = tmp_path / "pool.jsonl"
    write_jsonl(path, make_pool(16))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_model, tokenizer) -> Path:
    """tiny_llama saved as a model folder (a student that trains in seconds)."""
    path = tmp_path_factory.mktemp("tiny_student")
    tiny_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
