"""Real low-bit export: packed int32 weights + per-group scales/zeros, loadable as a low-bit model.

Layout per quantized linear ``W [N, K]`` (the GPTQ tensor layout with ``sym=False``, version 2
zero-points, i.e. stored as is rather than minus one, so a zero-point of 0 survives):

* ``qweight`` int32 ``[K*b/32, N]``: column n is row n of the codes packed along K
  (``leanlm.core.kernels.lowbit.pack``: b = 2/4 natural order, b = 3 the GPTQ 3-bit stream)
* ``qzeros``  int32 ``[K/g, N*b/32]``: zero-points packed along N
* ``scales``  fp16 (or fp32) ``[K/g, N]``
* ``g_idx``   int32 ``[K]`` = k // g (no act-order)

Everything else (embeddings, norms, ``lm_head``) is stored in the model's dtype. ``config.json``
carries ``quantization_config = {"quant_method": "gptq", "bits", "group_size", "sym": false,
"desc_act": false, "checkpoint_format": "gptq_v2", "leanlm_bitdistiller": {...}}`` and a
``quantize_config.json`` is written for GPTQ tools. ``load_packed`` builds the model with
``PackedLinear`` layers that run ``lowbit_matmul`` (Triton on CUDA, PyTorch on CPU).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.bitdistiller.modules import QuantLinear
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit

log = logging.getLogger(__name__)

SCALE_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


class PackedLinear(nn.Module):
    """A linear layer stored as packed b-bit codes; ``forward`` is the dequantize-matmul kernel."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int,
        bias: bool,
        scale_dtype: torch.dtype,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        n_groups = in_features // group_size
        self.register_buffer(
            "qweight", torch.zeros(lowbit.packed_words(in_features, bits), out_features, dtype=torch.int32)
        )
        self.register_buffer(
            "qzeros", torch.zeros(n_groups, lowbit.packed_words(out_features, bits), dtype=torch.int32)
        )
        self.register_buffer("scales", torch.zeros(n_groups, out_features, dtype=scale_dtype))
        self.register_buffer("g_idx", torch.arange(in_features, dtype=torch.int32) // group_size)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self._zeros_nk: torch.Tensor | None = None

    def zeros_nk(self) -> torch.Tensor:
        """Unpacked zero-points ``[N, K/g]`` (small), cached after the first call."""
        if self._zeros_nk is None or self._zeros_nk.device != self.qzeros.device:
            self._zeros_nk = lowbit.unpack(self.qzeros, self.bits, self.out_features).t().contiguous()
        return self._zeros_nk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lowbit.lowbit_matmul(
            x, self.qweight.t(), self.scales.t(), self.zeros_nk(), self.bits, self.group_size, self.bias
        )

    @classmethod
    @torch.no_grad()
    def from_quant_linear(cls, layer: QuantLinear, scale_dtype: torch.dtype) -> PackedLinear:
        spec = layer.spec
        q = lowbit.quantize_asym(layer.weight.detach(), spec.bits, spec.group_size)
        p = cls(
            layer.in_features,
            layer.out_features,
            spec.bits,
            spec.group_size,
            layer.bias is not None,
            scale_dtype,
        )
        p.qweight.copy_(lowbit.pack(q.codes, spec.bits).t())
        p.qzeros.copy_(lowbit.pack(q.zeros.t().contiguous(), spec.bits))
        p.scales.copy_(q.scales.t())
        if layer.bias is not None:
            p.bias.data.copy_(layer.bias.detach().float())
        return p.to(layer.weight.device)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}-g{self.group_size}"


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
        _swap(model, name, PackedLinear.from_quant_linear(m, scale_dtype))
    return len(layers)


def gptq_config(spec: QuantSpec, scale_dtype: torch.dtype) -> dict[str, Any]:
    return {
        "quant_method": "gptq",
        "bits": spec.bits,
        "group_size": spec.group_size,
        "sym": False,
        "desc_act": False,
        "checkpoint_format": "gptq_v2",
        "leanlm_bitdistiller": {
            "format": "packed",
            "quant_type": spec.quant_type,
            "scale_dtype": str(scale_dtype).split(".")[-1],
        },
    }


def export_packed(
    model: nn.Module, tokenizer: Any, out_dir: str | Path, spec: QuantSpec, scale_dtype: str = "fp16"
) -> dict[str, Any]:
    """Pack ``model`` (with QuantLinear layers) and save it to ``out_dir``; returns sizes in bytes."""
    from safetensors.torch import save_model

    from leanlm.core.records import write_json

    if scale_dtype not in SCALE_DTYPES:
        raise UserError(f"scale dtype must be one of fp16, fp32; got {scale_dtype!r}")
    sd = SCALE_DTYPES[scale_dtype]
    n = pack_model(model, sd)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["quantization_config"] = gptq_config(spec, sd)
    write_json(out / "config.json", config)
    write_json(
        out / "quantize_config.json",
        {k: v for k, v in config["quantization_config"].items() if k != "quant_method"},
    )
    save_model(model, str(out / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    sizes = packed_sizes(model)
    sizes["file_bytes"] = (out / "model.safetensors").stat().st_size
    sizes["layers"] = n
    write_json(out / "export_summary.json", sizes)
    return sizes


def packed_sizes(model: nn.Module) -> dict[str, int]:
    """Bytes of the packed linear layers (codes + scales + zeros) and of everything else."""
    packed = other = 0
    seen: set[int] = set()
    for m in model.modules():
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if id(t) in seen or (isinstance(m, PackedLinear) and t is m.g_idx):
                continue
            seen.add(id(t))
            nbytes = t.numel() * t.element_size()
            if isinstance(m, PackedLinear):
                packed += nbytes
            else:
                other += nbytes
    return {"packed_linear_bytes": packed, "other_bytes": other, "total_bytes": packed + other}


def load_packed(
    location: str | Path, dtype: str | None = None, device: str | None = None
) -> tuple[nn.Module, QuantSpec]:
    """Load an ``export_packed`` folder as a model with PackedLinear layers; (model, spec)."""
    from safetensors import safe_open
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from leanlm.core.models import pick_device, pick_dtype

    folder = Path(location)
    config = AutoConfig.from_pretrained(str(folder))
    qc = config.quantization_config
    qc = qc if isinstance(qc, dict) else qc.to_dict()
    meta = qc.get("leanlm_bitdistiller") or {}
    spec = QuantSpec(meta.get("quant_type", "int"), qc["bits"], qc["group_size"])
    del config.quantization_config
    dev = pick_device(device)
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved_dtype = raw.get("dtype") or raw.get("torch_dtype")
    model = AutoModelForCausalLM.from_config(config, dtype=pick_dtype(dtype or saved_dtype, dev))
    scale_dtype = SCALE_DTYPES.get(meta.get("scale_dtype", "float16"), torch.float16)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118 - a safetensors handle is not a dict
    names = [k[: -len(".qweight")] for k in keys if k.endswith(".qweight")]
    for name in names:
        lin = model.get_submodule(name)
        _swap(
            model,
            name,
            PackedLinear(
                lin.in_features,
                lin.out_features,
                spec.bits,
                spec.group_size,
                lin.bias is not None,
                scale_dtype,
            ),
        )
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise UserError(
            f"{folder}: export does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.to(dev).eval(), spec
