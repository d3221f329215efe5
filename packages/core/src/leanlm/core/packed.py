"""Packed low-bit models: the on-disk format, its layers, and the loader ``load_model`` uses.

A packed folder (written by ``bitdistiller-export``) is a transformers model folder whose quantized
linears ``W [N, K]`` are stored in the GPTQ tensor layout with ``sym=False`` and version-2 zero-points
(stored as is, so a zero-point of 0 survives):

* ``qweight`` int32 ``[K*b/32, N]``: column n is row n of the codes packed along K
  (``leanlm.core.kernels.lowbit.pack``: b = 2/4 natural order, b = 3 the GPTQ 3-bit stream)
* ``qzeros``  int32 ``[K/g, N*b/32]``: zero-points packed along N
* ``scales``  fp16 (or fp32) ``[K/g, N]``
* ``g_idx``   int32 ``[K]`` = k // g (no act-order)

and ``config.json`` carries ``quantization_config = {"quant_method": "gptq", "bits", "group_size",
"sym": false, "desc_act": false, "checkpoint_format": "gptq_v2", "leanlm_bitdistiller": {...}}``.
With ``"lm_head": "int8"`` in that last dict, ``lm_head`` (and a tied embedding) is stored as int8
per-output-channel codes ``weight_int8 [V, H]`` with fp32 ``weight_scale [V]``.

The fast layouts are built at load, on first use: ``PackedLinear`` runs PyTorch's int4 weight-only
kernels (``leanlm.core.kernels.int4pack``) for bf16 activations on CPU, and on CUDA whichever of
tinygemm or the Triton GEMV / dequantize + cuBLAS is faster for the row count, timed once per shape;
fp32 (or fp16) activations run the exact dequantize-matmul (``lowbit.lowbit_matmul``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.kernels import int4pack, lowbit

log = logging.getLogger(__name__)

SCALE_DTYPES = {
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
LM_HEAD_MODES = ("float", "int8")


def fast_kernels_enabled() -> bool:
    """``LEANLM_PACKED_FAST=0`` forces the exact dequantize-matmul everywhere (for comparisons)."""
    return os.environ.get("LEANLM_PACKED_FAST", "1") != "0"


# ----------------------------------------------------------------------------- CUDA kernel choice

_CUDA_CHOICE: dict[tuple, str] = {}


def _rows_bucket(m: int) -> int:
    return 1 if m == 1 else 16 if m <= 16 else 256


def pick_fastest(key: tuple, candidates: dict[str, Callable[[], torch.Tensor]], reps: int = 10) -> str:
    """Time each candidate (CUDA events, after a warm-up) once per ``key``; cache and return the fastest."""
    if key in _CUDA_CHOICE:
        return _CUDA_CHOICE[key]
    times: dict[str, float] = {}
    for name, fn in candidates.items():
        try:
            fn()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            torch.cuda.synchronize()
            times[name] = start.elapsed_time(end) / reps
        except (RuntimeError, ValueError) as e:  # a kernel that rejects this shape is not a candidate
            log.debug("kernel %s unusable for %s: %s", name, key, e)
    best = min(times, key=times.get)
    log.info("packed linear %s: %s (%s)", key, best, ", ".join(f"{k} {v:.4f} ms" for k, v in times.items()))
    _CUDA_CHOICE[key] = best
    return best


# ----------------------------------------------------------------------------- layers


class PackedLinear(nn.Module):
    """A linear layer stored as packed b-bit codes (GPTQ-v2 layout); see the module docstring."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int,
        bias: bool,
        scale_dtype: torch.dtype = torch.float16,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = lowbit.check_bits(bits), group_size
        n_groups = lowbit.check_group(in_features, group_size)
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
        self._int4: int4pack.Int4PackWeight | None = None

    @classmethod
    @torch.no_grad()
    def from_codes(
        cls,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: torch.Tensor,
        bits: int,
        group_size: int,
        bias: torch.Tensor | None = None,
        scale_dtype: torch.dtype = torch.float16,
    ) -> PackedLinear:
        """From codes ``uint8 [N, K]``, scales ``[N, K/g]`` and zero-points ``uint8 [N, K/g]``."""
        n, k = codes.shape
        p = cls(k, n, bits, group_size, bias is not None, scale_dtype)
        p.qweight.copy_(lowbit.pack(codes, bits).t())
        p.qzeros.copy_(lowbit.pack(zeros.t().contiguous(), bits))
        p.scales.copy_(scales.t())
        if bias is not None:
            p.bias.data.copy_(bias.detach().float())
        return p.to(codes.device)

    def _apply(self, fn: Any, recurse: bool = True) -> PackedLinear:
        # .to()/.cuda() move the buffers: the layouts built from them must be rebuilt
        self._zeros_nk = self._int4 = None
        return super()._apply(fn, recurse)

    def zeros_nk(self) -> torch.Tensor:
        """Unpacked zero-points ``uint8 [N, K/g]`` (small), cached after the first call."""
        if self._zeros_nk is None or self._zeros_nk.device != self.qzeros.device:
            self._zeros_nk = lowbit.unpack(self.qzeros, self.bits, self.out_features).t().contiguous()
        return self._zeros_nk

    def codes(self) -> torch.Tensor:
        """Codes ``uint8 [N, K]``."""
        return lowbit.unpack(self.qweight.t().contiguous(), self.bits, self.in_features)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W [N, K] = (q - z) * s`` in ``dtype``."""
        return lowbit.dequantize(self.codes(), self.scales.t(), self.zeros_nk(), self.group_size, dtype)

    def int4_weight(self) -> int4pack.Int4PackWeight:
        if self._int4 is None:
            self._int4 = int4pack.Int4PackWeight.from_codes(
                self.codes(), self.scales.t().float(), self.zeros_nk(), self.group_size
            )
        return self._int4

    def _exact(self, x: torch.Tensor) -> torch.Tensor:
        return lowbit.lowbit_matmul(
            x, self.qweight.t(), self.scales.t(), self.zeros_nk(), self.bits, self.group_size, self.bias
        )

    def _int4_matmul(self, x: torch.Tensor) -> torch.Tensor:
        y = self.int4_weight().matmul(x).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def kernel_for(self, x: torch.Tensor) -> str:
        """Which kernel ``forward(x)`` runs: int4pack, triton/exact (CUDA choice), or exact."""
        if not fast_kernels_enabled() or x.dtype != torch.bfloat16:
            return "exact"
        if x.device.type == "cpu":
            return "int4pack" if int4pack.cpu_supported(self.in_features, self.group_size) else "exact"
        if x.is_cuda and int4pack.cuda_supported(self.out_features, self.in_features, self.group_size):
            m = x.numel() // self.in_features
            key = (self.out_features, self.in_features, self.bits, self.group_size, _rows_bucket(m), x.device)
            if key not in _CUDA_CHOICE:
                probe = torch.randn(_rows_bucket(m), self.in_features, device=x.device, dtype=x.dtype)
                pick_fastest(
                    key, {"int4pack": lambda: self._int4_matmul(probe), "exact": lambda: self._exact(probe)}
                )
            return _CUDA_CHOICE[key]
        return "exact"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_for(x) == "int4pack":
            return self._int4_matmul(x)
        return self._exact(x)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int{self.bits}-g{self.group_size}"


def _int8_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``s = max|w| / 127`` (>= 1e-12), ``c = round(w / s)`` in -127..127."""
    w = w.detach().float()
    s = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    c = torch.clamp(torch.round(w / s[:, None]), -127, 127).to(torch.int8)
    return c, s


class Int8Linear(nn.Module):
    """Weight-only int8 linear ``y = (x @ c^T) * s`` (no bias), ``c`` int8 ``[N, K]``, ``s`` fp32 ``[N]``.

    bf16 activations on CPU run two exact 4-bit planes on PyTorch's int4 kernel
    (``int4pack.Int8PlaneWeight``); other dtypes/devices dequantize to ``x.dtype`` and call ``F.linear``.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.zeros(out_features, dtype=torch.float32))
        self._planes: int4pack.Int8PlaneWeight | None = None

    @classmethod
    def from_weight(cls, w: torch.Tensor) -> Int8Linear:
        m = cls(w.shape[1], w.shape[0])
        m.weight_int8, m.weight_scale = _int8_quantize(w)
        return m.to(w.device)

    def _apply(self, fn: Any, recurse: bool = True) -> Int8Linear:
        self._planes = None
        return super()._apply(fn, recurse)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.weight_int8.float() * self.weight_scale[:, None]).to(dtype)

    def kernel_for(self, x: torch.Tensor) -> str:
        ok = fast_kernels_enabled() and x.dtype == torch.bfloat16 and x.device.type == "cpu"
        return "int8planes" if ok and int4pack.cpu_supported(self.in_features, 32) else "dequant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_for(x) == "int8planes":
            if self._planes is None:
                self._planes = int4pack.Int8PlaneWeight.from_int8(self.weight_int8, self.weight_scale)
            return self._planes.matmul(x)
        return nn.functional.linear(x, self.weight_int8.to(x.dtype)) * self.weight_scale.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int8 per channel"


class Int8Embedding(nn.Module):
    """Embedding lookup from int8 rows: ``E[i] = c[i] * s[i]`` (shares ``Int8Linear``'s buffers when tied)."""

    def __init__(self, head: Int8Linear, dtype: torch.dtype, padding_idx: int | None = None):
        super().__init__()
        self.head = [head]  # a list: not a submodule, so the buffers are saved once (under lm_head)
        self.embedding_dim, self.num_embeddings = head.in_features, head.out_features
        self.padding_idx = padding_idx
        self.dtype = dtype

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight.dtype/.device/.shape of input embeddings
        h = self.head[0]
        return h.weight_int8.to(self.dtype) * h.weight_scale[:, None].to(self.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.head[0]
        return h.weight_int8[ids].to(self.dtype) * h.weight_scale[ids].unsqueeze(-1).to(self.dtype)


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _head_name(model: nn.Module) -> str:
    head = model.get_output_embeddings()
    for name, m in model.named_modules():
        if m is head:
            return name
    raise UserError("the model has no output embedding (lm_head) to quantize")


def quantize_lm_head(model: nn.Module, mode: str = "int8") -> nn.Module:
    """``mode`` int8: replace ``lm_head`` (and a tied input embedding) by int8 weight-only modules in place."""
    if mode not in LM_HEAD_MODES:
        raise UserError(f"--lm-head must be one of {', '.join(LM_HEAD_MODES)}, got {mode!r}")
    if mode == "float" or isinstance(model.get_output_embeddings(), Int8Linear):
        return model
    head_name = _head_name(model)
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    tied = emb is not None and emb.weight is head.weight
    q = Int8Linear.from_weight(head.weight)
    _swap(model, head_name, q)
    if tied:
        emb_name = next(n for n, m in model.named_modules() if m is emb)
        _swap(model, emb_name, Int8Embedding(q, head.weight.dtype, getattr(emb, "padding_idx", None)))
    return model


def _keep_int8_tied(model: nn.Module) -> None:
    """Stop ``tie_weights`` (called by ``from_config``/``post_init``) from re-tying an int8 head."""
    model.config.tie_word_embeddings = False


# ----------------------------------------------------------------------------- the folder


def packed_quantization(location: str | Path) -> dict[str, Any] | None:
    """The ``quantization_config`` of a leanlm packed folder, or None for anything else."""
    path = Path(location) / "config.json"
    if not path.is_file():
        return None
    try:
        qc = json.loads(path.read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError):
        return None
    if (
        isinstance(qc, dict)
        and qc.get("quant_method") == "gptq"
        and isinstance(qc.get("leanlm_bitdistiller"), dict)
    ):
        return qc
    return None


def is_packed_folder(location: str | Path) -> bool:
    return packed_quantization(location) is not None


def load_packed(
    location: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    lm_head: str | None = None,
) -> nn.Module:
    """Load a packed folder as a model with ``PackedLinear`` layers (``model.leanlm_packed`` = its settings).

    ``dtype`` sets the activations (and norms/embeddings): bf16 runs the fast int4 kernels on CPU.
    ``lm_head`` "int8" quantizes a float head at load; the folder's own int8 head always loads as int8.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model as load_safetensors
    from transformers import AutoConfig, AutoModelForCausalLM

    from leanlm.core.models import pick_device, pick_dtype

    folder = Path(location)
    qc = packed_quantization(folder)
    if qc is None:
        raise UserError(f"{folder} is not a leanlm packed folder (no GPTQ quantization_config from leanlm)")
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"{folder}: model.safetensors is missing")
    if lm_head is not None and lm_head not in LM_HEAD_MODES:
        raise UserError(f"--lm-head must be one of {', '.join(LM_HEAD_MODES)}, got {lm_head!r}")
    meta = qc["leanlm_bitdistiller"]
    bits, group_size = int(qc["bits"]), int(qc["group_size"])
    config = AutoConfig.from_pretrained(str(folder))
    del config.quantization_config
    dev = pick_device(device)
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    saved_dtype = raw.get("dtype") or raw.get("torch_dtype")
    torch_dtype = pick_dtype(dtype or saved_dtype, dev)
    stored_head = meta.get("lm_head", "float")
    tied = bool(getattr(config, "tie_word_embeddings", False))
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    scale_dtype = SCALE_DTYPES.get(meta.get("scale_dtype", "float16"), torch.float16)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118 - a safetensors handle is not a dict
    for name in (k[: -len(".qweight")] for k in keys if k.endswith(".qweight")):
        lin = model.get_submodule(name)
        _swap(
            model,
            name,
            PackedLinear(
                lin.in_features, lin.out_features, bits, group_size, lin.bias is not None, scale_dtype
            ),
        )
    if stored_head == "int8":
        head_name = _head_name(model)
        head = model.get_output_embeddings()
        q = Int8Linear(head.in_features, head.out_features)
        _swap(model, head_name, q)
        if tied:
            emb = model.get_input_embeddings()
            emb_name = next(n for n, m in model.named_modules() if m is emb)
            _swap(model, emb_name, Int8Embedding(q, torch_dtype, getattr(emb, "padding_idx", None)))
        _keep_int8_tied(model)
    missing, unexpected = load_safetensors(model, str(folder / "model.safetensors"), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise UserError(
            f"{folder}: export does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if tied and stored_head != "int8":
        model.tie_weights()
    if lm_head == "int8" and stored_head != "int8":
        quantize_lm_head(model, "int8")
        _keep_int8_tied(model)
    model.leanlm_packed = {
        "bits": bits,
        "group_size": group_size,
        "quant_type": meta.get("quant_type", "int"),
        "lm_head": "int8" if lm_head == "int8" else stored_head,
    }
    return model.to(dev).eval()


def gptq_quantization_config(
    bits: int,
    group_size: int,
    quant_type: str = "int",
    scale_dtype: torch.dtype = torch.float16,
    lm_head: str = "float",
) -> dict[str, Any]:
    """The ``quantization_config`` of a packed folder (GPTQ v2 keys plus leanlm's own)."""
    return {
        "quant_method": "gptq",
        "bits": bits,
        "group_size": group_size,
        "sym": False,
        "desc_act": False,
        "checkpoint_format": "gptq_v2",
        "leanlm_bitdistiller": {
            "format": "packed",
            "quant_type": quant_type,
            "scale_dtype": str(scale_dtype).split(".")[-1],
            "lm_head": lm_head,
        },
    }


def save_packed(
    model: nn.Module, out_dir: str | Path, quantization_config: dict[str, Any], tokenizer: Any = None
) -> dict[str, int]:
    """Write a model whose linears are ``PackedLinear`` (and optionally an ``Int8Linear`` head) as a packed folder."""
    from safetensors.torch import save_model

    from leanlm.core.records import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["use_cache"] = True  # an inference artifact: QAT checkpoints save use_cache=False (checkpointing)
    config["quantization_config"] = quantization_config
    write_json(out / "config.json", config)
    write_json(
        out / "quantize_config.json", {k: v for k, v in quantization_config.items() if k != "quant_method"}
    )
    # {"format": "pt"}: transformers (and GPTQModel through it) refuse a safetensors file without it
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    sizes = packed_sizes(model)
    sizes["file_bytes"] = (out / "model.safetensors").stat().st_size
    return sizes


def warm_up(model: nn.Module, dtype: torch.dtype | None = None) -> float:
    """Build every fast layout now (one tiny forward per layer) instead of in the first token; seconds taken."""
    t0 = time.perf_counter()
    dt = dtype or next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for m in model.modules():
        if isinstance(m, PackedLinear | Int8Linear):
            device = next(m.buffers()).device
            with torch.no_grad():
                m(torch.zeros(1, m.in_features, dtype=dt, device=device))
    return time.perf_counter() - t0


def packed_sizes(model: nn.Module) -> dict[str, int]:
    """Bytes of the packed linear layers (codes + scales + zeros) and of everything else (as stored)."""
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


__all__ = [
    "LM_HEAD_MODES",
    "SCALE_DTYPES",
    "Int8Embedding",
    "Int8Linear",
    "PackedLinear",
    "gptq_quantization_config",
    "is_packed_folder",
    "load_packed",
    "packed_quantization",
    "packed_sizes",
    "pick_fastest",
    "quantize_lm_head",
    "save_packed",
    "warm_up",
]
