"""nox sessions: `uv run nox` runs every package's tests (each in its own venv synced from the lock) and lint.

uv run nox                      # all tests + lint
uv run nox -s "tests(package='bita')"
uv run nox -s compose           # the chains across methods (tests/compose), every package installed
uv run nox -s bench -- bita     # a package's benchmarks
uv run nox -s demo              # `leanlm demo` in a clean venv
"""

from __future__ import annotations

import os

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
    """Install exactly one workspace package (and its dependency groups) from uv.lock into the session venv."""
    args = ["uv", "sync", "--frozen", "--inexact", "--package", f"leanlm-{package}"]
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
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True)
    session.run("pytest", "tests/compose", "-q", *session.posargs, env=OFFLINE_ENV)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole workspace."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks of the packages named after `--` (default: all), writing bench/results.*."""
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
