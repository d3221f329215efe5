"""GGUF export: leanlm's low-bit codes re-encoded exactly as GGUF ``Q4_1`` blocks (llama.cpp runs the file).

A ``Q4_1`` block holds 32 consecutive weights of one row as ``w = d * q + m`` with fp16 ``d``, ``m`` and
4-bit ``q`` (byte j of the 16 code bytes: weight j in the low nibble, weight j + 16 in the high one).
leanlm's asymmetric group codes give ``w = (q - z) * s = s * q - s * z``, so every group of ``g``
weights (g a multiple of 32) becomes g / 32 blocks with ``d = s``, ``m = -s * z`` and the codes
unchanged (2- and 3-bit codes are 4-bit codes that use fewer values). The only difference from
leanlm's dequantized weight is fp16 rounding of ``d`` and ``m``; group sizes that are not a multiple
of 32, NF3 (no affine grid) and non-llama architectures raise ``UserError``.

Other tensors: token embedding (and an untied ``output``) F16, norms F32. Q and K rows are permuted
from the transformers rotate-half layout to GGUF's interleaved one, as llama.cpp's converter does
(a row permutation: blocks and codes move whole). The tokenizer (GPT-2 style BPE: tokens, types,
merges, special ids) and the chat template go into the metadata so llama.cpp can chat with the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leanlm.bitdistiller.modules import QuantLinear
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.kernels import lowbit

Q4_1_BLOCK = 32
# transformers module name (after "model.layers.N.") -> GGUF tensor name (after "blk.N.")
LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def check_spec(spec: QuantSpec) -> None:
    """Raise a one-line UserError unless ``spec`` has an exact Q4_1 encoding."""
    if spec.quant_type != "int":
        raise UserError(f"GGUF export needs an affine int grid; {spec.name} (NF3) has no exact GGUF type")
    if spec.group_size % Q4_1_BLOCK:
        raise UserError(
            f"GGUF Q4_1 needs a group size that is a multiple of {Q4_1_BLOCK}; {spec.name} has "
            f"{spec.group_size} and cannot be re-encoded exactly (re-train with --group-size 32/64/128)"
        )


def check_gguf_spec(model: str, quant_type: str | None, w_bit: int | None, group_size: int | None) -> None:
    """Before loading weights: the saved or flagged quantization must be exportable to Q4_1."""
    from leanlm.bitdistiller.checkpoint import resolve_spec, saved_quantization, spec_from_args
    from leanlm.core.models import check_model_folder, model_location

    location = check_model_folder(model_location(model))
    spec = resolve_spec(saved_quantization(location), spec_from_args(quant_type, w_bit, group_size), location)
    if spec is not None:
        check_spec(spec)


def q4_1_blocks(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> np.ndarray:
    """uint8 ``[N, K/32 * 20]``: Q4_1 blocks (fp16 d, fp16 m, 16 code bytes) of codes ``[N, K]``.

    ``scales``/``zeros`` are ``[N, K/g]``; d = s and m = -s * z (computed in fp32, stored fp16).
    """
    n, k = codes.shape
    if group_size % Q4_1_BLOCK or k % group_size:
        raise UserError(f"group size {group_size} is not a multiple of {Q4_1_BLOCK} dividing {k}")
    if int(codes.max()) > 15:
        raise UserError("Q4_1 holds 4-bit codes; got codes above 15")
    per = group_size // Q4_1_BLOCK
    s = scales.float().repeat_interleave(per, dim=1)  # [N, K/32]
    z = zeros.float().repeat_interleave(per, dim=1)
    d = s.numpy().astype(np.float16)
    m = (-s * z).numpy().astype(np.float16)
    c = codes.to(torch.uint8).numpy().reshape(n, k // Q4_1_BLOCK, 2, 16)
    qs = c[:, :, 0, :] | (c[:, :, 1, :] << 4)
    blocks = np.concatenate(
        [d.view(np.uint8).reshape(n, -1, 2), m.view(np.uint8).reshape(n, -1, 2), qs], axis=-1
    )
    return np.ascontiguousarray(blocks.reshape(n, -1))


def rope_row_order(n_rows: int, n_heads: int) -> torch.Tensor:
    """Row order taking transformers' rotate-half Q/K rows to GGUF's interleaved pairs (per head)."""
    idx = torch.arange(n_rows)
    return idx.reshape(n_heads, 2, n_rows // n_heads // 2).transpose(1, 2).reshape(n_rows)


def _tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """GPT-2 style BPE vocabulary, merges, token types and special ids from a fast tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError("GGUF export needs a fast (tokenizers) tokenizer")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"GGUF export supports BPE tokenizers; this one is {model.get('type')!r}")
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    types = [
        (3 if added[t].special else 4) if t in added else 1 for t in tokens
    ]  # control, user-defined, normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def _pre_tokenizer_name(tokens: list[str]) -> str:
    """llama.cpp's pre-tokenizer name: the embedded model's ("smollm") when the vocabulary is its own."""
    try:
        import gguf

        from leanlm.core.models import embedded_gguf_path

        reader = gguf.GGUFReader(str(embedded_gguf_path()))
        if reader.fields["tokenizer.ggml.tokens"].contents() == tokens:
            return str(reader.fields["tokenizer.ggml.pre"].contents())
    except (UserError, KeyError, OSError, ImportError):
        pass
    return "default"


def gguf_file(out: str | Path) -> Path:
    """``out`` if it ends in ``.gguf``, else ``out/model.gguf``; its folder created."""
    path = Path(out)
    if path.suffix != ".gguf":
        path = path / "model.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _rope_theta(config: Any) -> float:
    """The llama config's RoPE base; UserError for another architecture or a scaled RoPE (not carried)."""
    if getattr(config, "model_type", None) != "llama":
        raise UserError(f"GGUF export supports the llama architecture; this model is {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export does not carry rope scaling; this model has {rope.get('rope_type')!r}")
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _add_hyperparameters(writer: Any, config: Any, spec: QuantSpec, rope_theta: float) -> None:
    import gguf

    n_head = config.num_attention_heads
    writer.add_name(Path(getattr(config, "_name_or_path", "") or "leanlm").name or "leanlm")
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(n_head))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(int(getattr(config, "head_dim", None) or config.hidden_size // n_head))
    writer.add_vocab_size(int(config.vocab_size))
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_1))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string("leanlm.quantization", f"{spec.name} (exact Q4_1 re-encoding)")


def _add_tokenizer(writer: Any, tokenizer: Any) -> None:
    """Vocabulary, merges, token types, special ids and chat template, for llama.cpp to tokenize and chat."""
    tok = _tokenizer_metadata(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tok["tokens"]))
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    for kind in ("bos", "eos", "pad", "unk"):
        value = getattr(tokenizer, f"{kind}_token_id")
        if value is not None:
            getattr(writer, f"add_{kind}_token_id")(int(value))
    writer.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


class _TensorWriter:
    """Adds tensors to a GGUF writer: quantized linears as Q4_1 blocks, the rest F16/F32; counts them."""

    def __init__(self, writer: Any):
        self.writer = writer
        self.counts = {"q4_1": 0, "f16": 0, "f32": 0}

    def add_float(self, name: str, t: torch.Tensor, f16: bool) -> None:
        arr = t.detach().float().numpy()
        self.writer.add_tensor(name, arr.astype(np.float16) if f16 else arr.astype(np.float32))
        self.counts["f16" if f16 else "f32"] += 1

    def add_linear(self, name: str, lin: nn.Module, rows: torch.Tensor | None) -> None:
        """``lin``'s weight (rows reordered by ``rows``): its int codes as Q4_1, a float layer as F16."""
        import gguf

        if not isinstance(lin, QuantLinear):
            w = lin.weight.detach()
            self.add_float(name, w[rows] if rows is not None else w, f16=True)
            return
        if lin.spec.quant_type != "int":
            raise UserError(f"{name}: {lin.spec.name} has no exact GGUF type")
        check_spec(lin.spec)
        with torch.no_grad():
            codes, scales, zeros = lowbit.quantize_asym(
                lin.weight.detach(), lin.spec.bits, lin.spec.group_size
            )
        if rows is not None:
            codes, scales, zeros = codes[rows], scales[rows], zeros[rows]
        blocks = q4_1_blocks(codes, scales, zeros, lin.spec.group_size)
        self.writer.add_tensor(name, blocks, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
        self.counts["q4_1"] += 1


def _add_tensors(tensors: _TensorWriter, model: nn.Module) -> None:
    """Embedding, every decoder layer (Q/K rows in GGUF's RoPE order), final norm, an untied head."""
    config = model.config
    base = model.get_submodule("model")
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    tensors.add_float("token_embd.weight", base.embed_tokens.weight, f16=True)
    for i, layer in enumerate(base.layers):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            mod = layer.get_submodule(hf_name)
            name = f"blk.{i}.{gguf_name}.weight"
            if gguf_name.endswith("norm"):
                tensors.add_float(name, mod.weight, f16=False)
                continue
            if getattr(mod, "bias", None) is not None:
                raise UserError(f"{name}: linear biases are not part of the llama GGUF layout")
            rows = rope_row_order(mod.out_features, heads[gguf_name]) if gguf_name in heads else None
            tensors.add_linear(name, mod, rows)
    tensors.add_float("output_norm.weight", base.norm.weight, f16=False)
    head = model.get_output_embeddings()
    if not (getattr(config, "tie_word_embeddings", False) and head.weight is base.embed_tokens.weight):
        tensors.add_linear("output.weight", head, None)


def export_gguf(model: nn.Module, tokenizer: Any, out: str | Path, spec: QuantSpec) -> dict[str, Any]:
    """Write ``model`` (QuantLinear layers, llama architecture) as one Q4_1 GGUF file; returns a summary.

    ``out``: a ``.gguf`` file, or a folder that gets ``model.gguf``.
    """
    import gguf

    check_spec(spec)
    rope_theta = _rope_theta(model.config)
    path = gguf_file(out)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    _add_hyperparameters(writer, model.config, spec, rope_theta)
    _add_tokenizer(writer, tokenizer)
    tensors = _TensorWriter(writer)
    _add_tensors(tensors, model)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"gguf": str(path), "bytes": path.stat().st_size, "spec": spec.name, "tensors": tensors.counts}


def dequantize_gguf(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file as fp32 numpy (``gguf.quants.dequantize``), keyed by GGUF name."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    return {t.name: dequantize(t.data, t.tensor_type).astype(np.float32) for t in reader.tensors}


__all__ = [
    "check_gguf_spec",
    "check_spec",
    "dequantize_gguf",
    "export_gguf",
    "gguf_file",
    "q4_1_blocks",
    "rope_row_order",
]
