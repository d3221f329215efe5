"""Real low-bit export: packed int32 weights + per-group scales/zeros, loadable as a low-bit model.

Layout per quantized linear ``W [N, K]`` (the GPTQ tensor layout with ``sym=False``, version 2
zero-points, i.e. stored as is rather than minus one, so a zero-point of 0 survives):

* ``qweight`` int32 ``[K*b/32, N]``: column n is row n of the codes packed along K
  (``leanlm.core.kernels.lowbit.pack``: b = 2/4 natural order, b = 3 the GPTQ 3-bit stream)
* ``qzeros``  int32 ``[K/g, N*b/32]``: zero-points packed along N
* ``scales``  fp16 (or fp32) ``[K/g, N]``
* ``g_idx``   int32 ``[K]`` = k // g (no act-order)

Everything else (embeddings, norms, ``lm_head``) is stored in the model's dtype (``lm_head="int8"``:
the head and a tied embedding as per-channel int8 instead). ``config.json``
carries ``quantization_config = {"quant_method": "gptq", "bits", "group_size", "sym": false,
"desc_act": false, "checkpoint_format": "gptq_v2", "leanlm_bitdistiller": {...}}`` and a
``quantize_config.json`` is written for GPTQ tools. The reader and the layers live in
``leanlm.core.packed`` (so ``leanlm.core.models.load_model`` opens packed folders for every command);
``export_gguf`` in ``leanlm.bitdistiller.gguf_export`` writes the same codes as GGUF Q4_1.

Other loaders (``bench/gptq_interop.py``): transformers 5.23 + optimum 2.3 + GPTQModel 7.7 reproduce leanlm's
logits at 2/3/4 bits (``AutoModelForCausalLM.from_pretrained(folder)``, or ``GPTQModel.load`` in fp16/bf16).
``GPTQModel.load(..., dtype=torch.float32)`` of a 4-bit folder picks GPTQModel's ``TorchFusedLinear``, whose
CPU path drops asymmetric zero-points (wrong for any ``sym: false`` checkpoint), so load in fp16/bf16 there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.bitdistiller.modules import QuantLinear
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit
from leanlm.core.packed import (
    LM_HEAD_MODES,
    SCALE_DTYPES,
    PackedLinear,
    gptq_quantization_config,
    packed_sizes,
    quantize_lm_head,
    save_packed,
)

log = logging.getLogger(__name__)


def packed_from_quant_linear(layer: QuantLinear, scale_dtype: torch.dtype) -> PackedLinear:
    """A QuantLinear's round-to-nearest codes (the same the fake-quantized forward uses) as a PackedLinear."""
    spec = layer.spec
    with torch.no_grad():
        q = lowbit.quantize_asym(layer.weight.detach(), spec.bits, spec.group_size)
    return PackedLinear.from_codes(
        q.codes, q.scales, q.zeros, spec.bits, spec.group_size, layer.bias, scale_dtype
    )


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def pack_model(model: nn.Module, scale_dtype: torch.dtype = torch.float16) -> int:
    """Replace every QuantLinear (int spec) by a PackedLinear in place; returns how many."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    if not layers:
        raise UserError("the model has no quantized layers to pack (pass --quant-type/--w-bit/--group-size)")
    for name, m in layers:
        if m.spec.quant_type != "int":
            raise UserError(
                f"packed export supports int2/int3/int4; {m.spec.name} (NF3) has no packed kernel"
            )
        for dim, what in ((m.in_features, "input"), (m.out_features, "output")):
            if dim * m.spec.bits % 32:
                raise UserError(
                    f"layer {name}: {what} size {dim} x {m.spec.bits} bits does not fill int32 words"
                )
        _swap(model, name, packed_from_quant_linear(m, scale_dtype))
    return len(layers)


def gptq_config(spec: QuantSpec, scale_dtype: torch.dtype, lm_head: str = "float") -> dict[str, Any]:
    return gptq_quantization_config(spec.bits, spec.group_size, spec.quant_type, scale_dtype, lm_head)


def export_packed(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | Path,
    spec: QuantSpec,
    scale_dtype: str = "fp16",
    lm_head: str = "float",
) -> dict[str, Any]:
    """Pack ``model`` (with QuantLinear layers) and save it to ``out_dir``; returns sizes in bytes.

    ``lm_head`` "int8" also stores the output head (and a tied embedding) as per-channel int8.
    """
    from leanlm.core.records import write_json

    if scale_dtype not in SCALE_DTYPES:
        raise UserError(f"scale dtype must be one of fp16, fp32; got {scale_dtype!r}")
    if lm_head not in LM_HEAD_MODES:
        raise UserError(f"--lm-head must be one of {', '.join(LM_HEAD_MODES)}, got {lm_head!r}")
    sd = SCALE_DTYPES[scale_dtype]
    n = pack_model(model, sd)
    if lm_head == "int8":
        quantize_lm_head(model, "int8")
    sizes = save_packed(model, out_dir, gptq_config(spec, sd, lm_head), tokenizer)
    sizes["layers"] = n
    write_json(Path(out_dir) / "export_summary.json", sizes)
    return sizes


def load_packed(
    location: str | Path, dtype: str | None = None, device: str | None = None, lm_head: str | None = None
) -> tuple[nn.Module, QuantSpec]:
    """Load an ``export_packed`` folder (``leanlm.core.packed.load_packed``); (model, spec)."""
    from leanlm.core.packed import load_packed as core_load_packed

    model = core_load_packed(location, dtype=dtype, device=device, lm_head=lm_head)
    info = model.leanlm_packed
    return model, QuantSpec(info["quant_type"], info["bits"], info["group_size"])


__all__ = ["PackedLinear", "export_packed", "gptq_config", "load_packed", "pack_model", "packed_sizes"]
