"""Checkpoints that remember their quantization, and loading that re-applies it.

The trap in the original: a QAT checkpoint holds *latent* full-precision weights; used as is, it
is neither the FP model nor the quantized one. leanlm writes a ``quantization_config`` into the
checkpoint's ``config.json``::

    {"quant_method": "bitdistiller", "format": "latent", "quant_type": "int", "bits": 2, "group_size": 64, ...}

and every leanlm-bitdistiller command loads models through ``load_model_for_eval``, which re-quantizes
such a checkpoint automatically. A packed export (see ``export``) carries a GPTQ-style
``quantization_config`` and loads as a low-bit model.

Outside leanlm, transformers would only warn "Unknown quantization type" and load the latent weights
as a full-precision model. So a saved checkpoint is *sealed*: its ``config.json`` has ``model_type``
``LATENT_MODEL_TYPE`` (the real one kept in ``quantization_config["model_type"]``), which
``AutoConfig``/``AutoModelForCausalLM.from_pretrained`` reject with a ValueError naming it, and a
``leanlm_note`` saying what to run instead. ``attach_quantization_config`` seals every later
``save_pretrained`` of the model (HF Trainer's ``checkpoint-N/``, ``final/``, ``bitdistiller-clip
--save-model``); ``hf_config`` unseals for leanlm's own loading; the tensors are unchanged, so Trainer
resume (which reads them directly) works as before.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from leanlm.bitdistiller.modules import model_spec, quantize_model
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError

log = logging.getLogger(__name__)

QUANT_METHOD = "bitdistiller"
# not a transformers architecture, on purpose: AutoConfig raises "has model type `...` but Transformers
# does not recognize this architecture" instead of loading latent weights as a full-precision model
LATENT_MODEL_TYPE = "leanlm_bitdistiller_latent_qat_checkpoint"
LATENT_NOTE = (
    "leanlm-bitdistiller QAT checkpoint: latent full-precision weights that are only meaningful re-quantized. "
    "Use it with leanlm-bitdistiller (bitdistiller-eval-ppl --model DIR, bitdistiller-eval ...) or export it "
    "(bitdistiller-export DIR OUT: packed GPTQ-v2 for transformers/GPTQModel; --format gguf for llama.cpp)."
)


def latent_config(spec: QuantSpec) -> dict[str, Any]:
    return {"quant_method": QUANT_METHOD, "format": "latent", **spec.to_dict()}


def seal(folder: str | Path) -> bool:
    """Make ``folder``'s config.json unloadable by plain transformers (see the module docstring); True if changed."""
    from leanlm.core.records import write_json

    path = Path(folder) / "config.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    qc = raw.get("quantization_config")
    if (
        not (isinstance(qc, dict) and qc.get("quant_method") == QUANT_METHOD)
        or raw.get("model_type") == LATENT_MODEL_TYPE
    ):
        return False
    qc["model_type"] = raw["model_type"]
    raw["model_type"] = LATENT_MODEL_TYPE
    raw["leanlm_note"] = LATENT_NOTE
    write_json(path, raw)  # atomic: a killed save leaves the old file or the new one
    return True


def is_latent_checkpoint(location: str | Path) -> bool:
    """True for a local folder holding a (sealed or not) BitDistiller latent checkpoint."""
    qc = saved_quantization(str(location))
    return qc is not None and qc.get("quant_method") == QUANT_METHOD


def hf_config(location: str | Path) -> Any:
    """The transformers config of a (sealed or not) latent checkpoint, without its quantization_config."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    raw = json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
    if raw.get("model_type") != LATENT_MODEL_TYPE:
        config = AutoConfig.from_pretrained(str(location))
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        return config
    qc = raw.pop("quantization_config")
    raw.pop("leanlm_note", None)
    raw["model_type"] = qc["model_type"]
    return CONFIG_MAPPING[raw["model_type"]].from_dict(raw)


def _sealing_save(model: nn.Module, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any:
    out = type(model).save_pretrained(model, save_directory, *args, **kwargs)
    if (Path(save_directory) / "config.json").is_file():  # only the main process writes it
        seal(save_directory)
    return out


def attach_quantization_config(model: nn.Module, spec: QuantSpec) -> None:
    """Record ``spec`` in ``model.config`` and seal every later ``save_pretrained`` of ``model``.

    HF Trainer saves checkpoints through ``model.save_pretrained``; the instance attribute set here
    (a partial, so a deep copy of the model seals its own saves) runs the class method, then ``seal``.
    """
    model.config.quantization_config = latent_config(spec)
    model.save_pretrained = functools.partial(_sealing_save, model)


def saved_quantization(location: str) -> dict[str, Any] | None:
    """The ``quantization_config`` in a model folder's config.json, if any (None for hub ids without one)."""
    from leanlm.core.records import read_json

    path = Path(location) / "config.json"
    if not path.exists():
        return None
    qc = read_json(path).get("quantization_config")
    return qc if isinstance(qc, dict) else None


def spec_from_args(quant_type: str | None, w_bit: int | None, group_size: int | None) -> QuantSpec | None:
    """A spec from command-line flags; None when none are given; defaults: int, 2 bits (3 for nf3), g128."""
    if quant_type is None and w_bit is None and group_size is None:
        return None
    qt = quant_type or "int"
    bits = w_bit if w_bit is not None else (3 if qt == "nf3" else 2)
    return QuantSpec(qt, bits, group_size if group_size is not None else 128)


def resolve_spec(saved: dict[str, Any] | None, flags: QuantSpec | None, location: str) -> QuantSpec | None:
    if saved is None or saved.get("quant_method") != QUANT_METHOD:
        return flags
    spec = QuantSpec.from_dict(saved)
    setting = (spec.quant_type, spec.bits, spec.group_size)  # the rounding is the saved one either way
    if flags is not None and (flags.quant_type, flags.bits, flags.group_size) != setting:
        raise UserError(
            f"{location} was trained as {spec.name} (its quantization_config), but the flags ask for {flags.name}; "
            "drop the flags to use the saved setting"
        )
    return spec


def load_model_for_eval(
    name: str,
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any, QuantSpec | None]:
    """(model, tokenizer, spec): a latent checkpoint re-quantized, a packed export, or a plain model.

    Flags quantize a plain model (round to nearest); with no flags and no saved config the model
    stays full precision.
    """
    from transformers import AutoModelForCausalLM

    from leanlm.core.models import load_model, load_tokenizer, model_location, pick_device, pick_dtype

    flags = spec_from_args(quant_type, w_bit, group_size)
    location = model_location(name)
    saved = saved_quantization(location)
    tokenizer = load_tokenizer(name)
    if saved is not None and saved.get("quant_method") == "gptq" and saved.get("leanlm_bitdistiller"):
        from leanlm.bitdistiller.export import load_packed

        if flags is not None:
            log.warning("%s is a packed export; ignoring the quantization flags", location)
        model, spec = load_packed(location, dtype=dtype, device=device)
        return model, tokenizer, spec
    spec = resolve_spec(saved, flags, location)
    if saved is not None and saved.get("quant_method") == QUANT_METHOD:
        config = hf_config(location)  # unsealed, without our quantization_config (not a transformers one)
        dev = pick_device(device)
        model = AutoModelForCausalLM.from_pretrained(location, config=config, dtype=pick_dtype(dtype, dev))
        model = model.to(dev).eval()
        log.info(
            "%s: latent checkpoint, re-quantizing as %s (saved quantization_config)", location, spec.name
        )
    else:
        model = load_model(name, dtype=dtype, device=device)
    if spec is not None:
        # the live config stays free of our quantization_config: libraries that inspect an
        # in-memory model (lm-eval's HFLM) hand it to transformers' quantizer registry and fail
        quantize_model(model, spec)
    else:
        log.info("no quantization requested or saved: full-precision model")
    return model, tokenizer, spec


def describe(model: nn.Module) -> str:
    spec = model_spec(model)
    packed = getattr(
        model, "leanlm_packed", None
    )  # a packed export: its layers are PackedLinear, not QuantLinear
    if spec is None and packed:
        spec = QuantSpec(packed["quant_type"], packed["bits"], packed["group_size"])
    return spec.name if spec else "fp"
