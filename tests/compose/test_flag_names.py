"""One name per concept across every console script of every package (all installed in this session)."""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points

# canonical flag -> names that would mean the same thing
SYNONYMS = {
    "model": {"model_name", "model_path", "model_name_or_path", "base_model", "checkpoint"},
    "max_new_tokens": {"max_tokens", "num_new_tokens", "new_tokens", "gen_length", "max_gen_len"},
    "dtype": {"torch_dtype", "precision"},
    "seed": {"random_seed", "rng_seed"},
    "output_dir": {"outdir", "save_dir", "output_folder", "out_dir"},
    "output": {"out", "output_file", "out_file", "output_path"},
    "max_length": {"max_seq_len", "max_seq_length", "seq_len", "model_max_length"},
    "learning_rate": {"lr"},
    "grad_accum": {"gradient_accumulation_steps", "accumulation_steps"},
    "batch_size": {"per_device_train_batch_size", "micro_batch_size", "bs"},
    "epochs": {"num_train_epochs", "num_epochs"},
    "base_url": {"api_base", "endpoint", "server_url"},
    "api_key": {"key", "token", "openai_api_key"},
}
# the one synonym kept on purpose: `leanlm serve --max_tokens` caps the OpenAI request field of that
# name, it is not a length to generate (that is --max_new_tokens everywhere)
LEGACY = {("leanlm serve", "max_tokens")}


def _script_parameters() -> dict[str, set[str]]:
    """script (or ``script subcommand``) -> its flag names, from the function fire calls."""
    out: dict[str, set[str]] = {}
    for ep in entry_points(group="console_scripts"):
        if not ep.value.startswith("leanlm."):
            continue
        component = ep.load().component
        if inspect.isroutine(component):
            out[ep.name] = set(inspect.signature(component).parameters)
        else:  # a class of subcommands (leanlm models|serve|recipe|demo ...)
            for name in (n for n in dir(component) if not n.startswith("_")):
                method = getattr(component, name)
                if callable(method):
                    out[f"{ep.name} {name}"] = set(inspect.signature(method).parameters) - {"self"}
    return out


def test_every_package_contributes_scripts():
    scripts = _script_parameters()
    for prefix in ("bita-", "bitdistiller-", "dllm-", "lion-", "switchback-", "leanlm "):
        assert any(s.startswith(prefix) for s in scripts), prefix


def test_no_script_uses_a_synonym_of_a_shared_flag():
    wrong = [
        f"{script}: --{name} (use --{canonical})"
        for script, params in _script_parameters().items()
        for canonical, names in SYNONYMS.items()
        for name in params & names
        if (script, name) not in LEGACY
    ]
    assert not wrong, wrong


def test_shared_flags_are_spelled_the_same_where_they_exist():
    scripts = _script_parameters()
    trainers = [
        s
        for s in scripts
        if s in {"bita-train", "bitdistiller-train", "dllm-finetune", "lion-train", "switchback-finetune"}
    ]
    assert len(trainers) == 5
    for flag in ("learning_rate", "epochs", "max_steps", "batch_size", "nproc", "report_to", "seed"):
        missing = [s for s in trainers if flag not in scripts[s]]
        assert not missing, f"--{flag} missing from {missing}"
    generators = [s for s, p in scripts.items() if "backend" in p and "base_url" in p]
    assert len(generators) >= 6
    for flag in ("model", "api_key", "concurrency", "max_failed_fraction"):
        missing = [s for s in generators if flag not in scripts[s]]
        assert not missing, f"--{flag} missing from {missing}"
