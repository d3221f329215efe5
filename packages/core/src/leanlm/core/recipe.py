"""``leanlm recipe RECIPE.yaml``: a chain of method steps, each step's output folder feeding the next.

A recipe (YAML or TOML) names a starting ``model`` and a list of ``steps``. Each step runs one
console script (or an explicit command list) with its positional ``args`` and its ``flags``; the runner adds the previous
step's model as ``--<model_flag>`` (default ``model``) and the step's own folder
``<run_dir>/<n>-<name>`` as ``--<output_flag>`` (default ``output_dir``; ``null`` for none). The
model the step hands on is ``<its folder>/<produces>`` (default: the folder itself; ``produces:
null`` hands on the model it got, for steps that only evaluate or make data). In flag values,
``{model}`` is the model the step receives, ``{output}`` its folder, ``{run_dir}`` the run's folder
and ``{steps.NAME.output}`` / ``{steps.NAME.model}`` an earlier step's folder / model.

Resumable: a finished step writes ``.leanlm-step.json`` with a digest of its command, its flags
and the digests before it. A re-run skips every step whose digest matches; a changed step and
every step after it run again (their stale folders are moved aside to ``<folder>.stale``).

Then every model the chain produced (the start too; a step with ``evaluate: false`` is left out)
is measured the same way: perplexity on held-out text, one task's accuracy through lm-eval, greedy
decode tokens/s and the size of its weight files, into ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.records import read_json, write_json, write_text

log = logging.getLogger(__name__)

STAMP = ".leanlm-step.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_PLACEHOLDER = re.compile(r"\{([a-z_]+(?:\.[A-Za-z0-9_-]+\.[a-z]+)?)\}")


@dataclass
class Step:
    name: str
    command: list[str]
    flags: dict[str, Any] = field(default_factory=dict)
    model_flag: str | None = "model"
    output_flag: str | None = "output_dir"
    produces: str | None = ""  # "" = the output folder itself; None = pass the received model on
    evaluate: bool = True
    args: list[str] = field(default_factory=list)  # positional arguments after the command


@dataclass
class Recipe:
    name: str
    model: str
    steps: list[Step]
    report: dict[str, Any] = field(default_factory=dict)


def _as_step(i: int, raw: Any, path: Path) -> Step:
    if not isinstance(raw, dict) or "command" not in raw:
        raise UserError(f"{path}: step {i + 1} needs a 'command' (a console script or a list)")
    unknown = set(raw) - {
        "name",
        "command",
        "args",
        "flags",
        "model_flag",
        "output_flag",
        "produces",
        "evaluate",
    }
    if unknown:
        raise UserError(f"{path}: step {i + 1} has unknown keys {sorted(unknown)}")
    command = raw["command"]
    command = [command] if isinstance(command, str) else [str(c) for c in command]
    name = str(raw.get("name") or command[0])
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UserError(f"{path}: step name {name!r} may use letters, digits, '-' and '_' only")
    flags = raw.get("flags") or {}
    if not isinstance(flags, dict):
        raise UserError(f"{path}: step {name!r}: 'flags' must be a mapping of flag -> value")
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise UserError(f"{path}: step {name!r}: 'args' must be a list of positional arguments")
    return Step(
        name,
        command,
        dict(flags),
        raw.get("model_flag", "model"),
        raw.get("output_flag", "output_dir"),
        raw.get("produces", ""),
        bool(raw.get("evaluate", True)),
        [str(a) for a in args],
    )


PACKAGED = Path(__file__).with_name("recipes")  # the recipes leanlm ships (also ./recipes in the repo)


def packaged_recipes() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def find_recipe(path: str | os.PathLike) -> Path:
    """A recipe file path, or the name of a packaged recipe (``distill-quantize-accelerate``)."""
    p = Path(path)
    if p.is_file():
        return p
    if (PACKAGED / f"{p.name}.yaml").is_file() and p.suffix == "" and len(p.parts) == 1:
        return PACKAGED / f"{p.name}.yaml"
    raise UserError(f"{p}: no such recipe file (packaged recipes: {', '.join(packaged_recipes())})")


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and check a recipe file (``.yaml``/``.yml`` or ``.toml``) or a packaged recipe's name."""
    p = find_recipe(path)
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # a parse error names the file, not a traceback
        raise UserError(f"{p}: not a valid recipe ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise UserError(f"{p}: a recipe needs a non-empty 'steps' list")
    steps = [_as_step(i, s, p) for i, s in enumerate(data["steps"])]
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise UserError(f"{p}: step names must be unique, got {names}")
    return Recipe(
        str(data.get("name") or p.stem),
        str(data.get("model", "default")),
        steps,
        dict(data.get("report") or {}),
    )


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _fill(value: Any, context: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_fill(v, context) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(1) not in context:
            raise UserError(
                f"recipe: unknown placeholder {{{m.group(1)}}} (known: {', '.join(sorted(context))})"
            )
        return context[m.group(1)]

    return _PLACEHOLDER.sub(sub, value)


def _argv(step: Step, flags: dict[str, Any], args: list[str]) -> list[str]:
    command = [*step.command, *args]
    if command[0] == "python":
        command[0] = sys.executable
    elif shutil.which(command[0]) is None and (Path(sys.executable).parent / command[0]).exists():
        command[0] = str(Path(sys.executable).parent / command[0])  # the console script of this environment
    for key, value in flags.items():
        if value is None:
            continue
        command += [f"--{key}", _flag_text(value)]
    return command


def _flag_text(value: Any) -> str:
    """A recipe value as one command-line word: booleans as true/false, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _set_aside(folder: Path) -> None:
    if folder.exists():
        stale = folder.with_name(folder.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        folder.rename(stale)


def run_steps(recipe: Recipe, run_dir: Path) -> list[dict[str, Any]]:
    """Run (or skip, when unchanged) every step; returns one record per step."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model, previous = recipe.model, digest(recipe.model)
    context: dict[str, str] = {"run_dir": str(run_dir)}
    done = []
    for n, step in enumerate(recipe.steps, start=1):
        folder = run_dir / f"{n}-{step.name}"
        context.update(model=model, output=str(folder))
        flags = {k: _fill(v, context) for k, v in step.flags.items()}
        args = [_fill(a, context) for a in step.args]
        if step.model_flag:
            flags.setdefault(step.model_flag, model)
        if step.output_flag:
            flags[step.output_flag] = str(folder)
        key = (
            digest(step.command, flags, previous) if not args else digest(step.command, args, flags, previous)
        )
        stamp = folder / STAMP
        finished = stamp.exists() and read_json(stamp).get("digest") == key
        # a skipped step reports the seconds of the run that made it
        seconds = float(read_json(stamp).get("seconds", 0.0)) if finished else 0.0
        if finished:
            log.info("recipe step %d %s: unchanged, skipped", n, step.name)
        else:
            _set_aside(folder)
            folder.mkdir(parents=True)
            argv = _argv(step, flags, args)
            log.info("recipe step %d %s: %s", n, step.name, " ".join(argv))
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=run_dir)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise UserError(
                    f"recipe step {n} ({step.name}) failed with exit code {proc.returncode}; "
                    "fix it and re-run: finished steps are skipped"
                )
            write_json(stamp, {"digest": key, "argv": argv, "seconds": seconds})
        produced = (
            model if step.produces is None else str(folder / step.produces) if step.produces else str(folder)
        )
        if step.produces is not None and not Path(produced).exists():
            raise UserError(
                f"recipe step {step.name}: it finished but {produced} does not exist (check 'produces')"
            )
        context[f"steps.{step.name}.output"] = str(folder)
        context[f"steps.{step.name}.model"] = produced
        done.append(
            {
                "step": step.name,
                "model": produced,
                "ran": not finished,
                "seconds": round(seconds, 1),
                "evaluate": step.evaluate and step.produces is not None,
                "digest": key,
            }
        )
        model, previous = produced, key
    return done


def weight_bytes(location: str) -> int | None:
    """Bytes of the model's own weight files (top level of its folder: not checkpoint-N/ or optimizer states)."""
    p = Path(location)
    if not p.is_dir():
        try:
            from leanlm.core.models import model_location

            p = Path(model_location(location))  # an alias such as the embedded model
        except Exception:  # noqa: BLE001 - a hub id or an unknown name: size unknown
            return None
        if not p.is_dir():
            return None
    return sum(f.stat().st_size for f in p.glob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


def measure(location: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Perplexity, one task's accuracy, greedy decode tokens/s and weight bytes of one model."""
    import torch

    from leanlm.core.evaluation.lm_eval_bridge import run_lm_eval
    from leanlm.core.evaluation.perplexity import perplexity
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.core.packed import is_packed_folder

    # a packed low-bit folder is measured in bf16, the activations its CPU kernels run in (fp32 would time
    # the slow dequantize-then-matmul fallback); everything else in fp32 unless the report says otherwise
    dtype = settings.get("dtype") or ("bfloat16" if is_packed_folder(location) else "float32")
    model, tok = load_model(location, dtype=dtype, device="cpu"), load_tokenizer(location)
    ppl = perplexity(
        model,
        tok,
        settings.get("text", "text"),
        seqlen=int(settings.get("seqlen", 256)),
        max_chunks=int(settings.get("max_chunks", 4)),
    )
    out: dict[str, Any] = {
        "ppl": round(ppl["ppl"], 3),
        "weight_bytes": weight_bytes(location),
        "dtype": dtype,
    }
    task = settings.get("task", "piqa")
    if task:
        scores = run_lm_eval(model, tok, [task], limit=int(settings.get("limit", 40)))
        out[f"{task}_acc"] = scores[task].get("acc")
    ids = tok("Write one sentence about the sea.", return_tensors="pt")["input_ids"]
    n = int(settings.get("speed_tokens", 32))
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):  # the first run pays one-time costs
            t0 = time.perf_counter()
            model.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id
            )
            best = min(best, time.perf_counter() - t0)
    out["decode_tok_s"] = round(n / best, 2)
    return out


def run_recipe(
    path: str | os.PathLike, run_dir: str | os.PathLike | None = None, evaluate: bool = True
) -> Path:
    """Run a recipe file; returns the path of its ``report.md``."""
    recipe = load_recipe(path)
    root = Path(run_dir) if run_dir else Path("runs") / recipe.name
    steps = run_steps(recipe, root)
    rows = [
        {"step": "start", "model": recipe.model, "evaluate": True, "digest": digest(recipe.model)},
        *steps,
    ]
    cache_path = root / "measurements.json"
    cache = read_json(cache_path) if cache_path.exists() else {}
    for row in rows:
        key = digest(row["digest"], recipe.report)
        if evaluate and row["evaluate"]:
            if (
                key not in cache
            ):  # a model measured before (same step digest, same settings) is not re-measured
                log.info("recipe: measuring %s", row["model"])
                cache[key] = measure(row["model"], recipe.report)
                write_json(cache_path, cache)
            row.update(cache[key])
    write_json(
        root / "report.json",
        {"recipe": recipe.name, "source": str(path), "report": recipe.report, "steps": rows},
    )
    metrics = [
        k
        for k in ("ppl", f"{recipe.report.get('task', 'piqa')}_acc", "decode_tok_s", "weight_bytes", "dtype")
        if any(k in r for r in rows)
    ]
    lines = [
        f"# Recipe {recipe.name}",
        "",
        "| step | model | ran | seconds | " + " | ".join(metrics) + " |",
        "|" + "---|" * (4 + len(metrics)),
    ]
    for r in rows:
        cells = [str(r.get(m, "-")) for m in metrics]
        lines.append(
            f"| {r['step']} | {r['model']} | {r.get('ran', '-')} | {r.get('seconds', '-')} | "
            + " | ".join(cells)
            + " |"
        )
    report = root / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report
