"""Pytest fixtures shared by every leanlm package: ``pytest_plugins = ["leanlm.core.testing.fixtures"]``.

Models load once per test process (``import transformers`` alone costs seconds); tests that
change weights must copy the model first (``copy.deepcopy``).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by subprocesses the tests start


# Parametrize tests over devices, torchao-style: ``@pytest.mark.parametrize("device", DEVICES)``.
# The CUDA case carries the ``gpu`` mark, so it is skipped (and reported) on machines without CUDA.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_configure(config: Any) -> None:
    import torch

    # Small test shapes gain nothing from intra-op threads, and on a busy 2-core machine every
    # OpenMP barrier waits for a descheduled thread (measured: 10-40x slower). One thread, always.
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    from leanlm.core.models import load_tokenizer

    return load_tokenizer("default")


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    """A random 4-layer GQA LLaMA with the embedded tokenizer's vocabulary (shared: do not mutate)."""
    from leanlm.core.testing.tiny_models import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_arch_dir(tmp_path_factory: Any) -> Any:
    """``tiny_arch_dir(arch)`` -> an HF folder (model + tokenizer) of ``leanlm.core.testing.tiny_models``'s tiny
    ``arch`` (llama, llama3, qwen2, qwen3, mistral, gemma, gemma2, phi3), written once per session."""
    from leanlm.core.testing.tiny_models import tiny_model_dir

    made: dict[str, Any] = {}

    def get(arch: str) -> Any:
        if arch not in made:
            made[arch] = tiny_model_dir(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def embedded_model() -> Any:
    """SmolLM2-135M-Instruct, fp32 on CPU (shared: do not mutate)."""
    from leanlm.core.models import load_model

    return load_model("default", device="cpu")
