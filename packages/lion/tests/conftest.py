from __future__ import annotations

from pathlib import Path

import pytest
from lion_helpers import make_pool

from leanlm.core.records import write_jsonl

pytest_plugins = ["leanlm.core.testing.fixtures"]


def pytest_configure(config):
    from leanlm.lion.demo import limit_threads

    limit_threads()  # tiny models: oversubscribed torch threads cost far more than they give


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
