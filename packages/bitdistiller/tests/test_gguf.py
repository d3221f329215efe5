"""GGUF export: Q4_1 round trip read back with gguf.GGUFReader, metadata, and bad inputs (exit 2)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from leanlm.bitdistiller import cli
from leanlm.bitdistiller.checkpoint import attach_quantization_config
from leanlm.bitdistiller.gguf_export import dequantize_gguf, export_gguf, q4_1_blocks, rope_row_order
from leanlm.bitdistiller.modules import QuantLinear, quantize_model
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.console import run_cli
from leanlm.core.kernels import lowbit

gguf = pytest.importorskip("gguf")


def fails(capsys, *argv) -> str:
    capsys.readouterr()  # drop earlier output (progress bars)
    with pytest.raises(SystemExit) as e:
        run_cli(cli.export, "bitdistiller-export", [str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, before loading any weights
    return err


def _expected(lin: QuantLinear, rows: torch.Tensor | None) -> np.ndarray:
    """leanlm's weight with d = fp16(s), m = fp16(-s z): w = d q + m, rows in GGUF order."""
    q = lowbit.quantize_asym(lin.weight.detach(), lin.spec.bits, lin.spec.group_size)
    g = lin.spec.group_size
    d = q.scales.half().float().repeat_interleave(g, 1)
    m = (-q.scales * q.zeros.float()).half().float().repeat_interleave(g, 1)
    w = d * q.codes.float() + m
    return (w[rows] if rows is not None else w).numpy()


@pytest.mark.parametrize("bits,g", [(2, 32), (3, 64), (4, 32)])
def test_gguf_round_trip_is_exact(tmp_path, tiny_model, tokenizer, bits, g):
    model = quantize_model(copy.deepcopy(tiny_model), QuantSpec("int", bits, g))
    summary = export_gguf(model, tokenizer, tmp_path / "m.gguf", QuantSpec("int", bits, g))
    cfg = model.config
    assert summary["tensors"]["q4_1"] == 7 * cfg.num_hidden_layers
    tensors = dequantize_gguf(tmp_path / "m.gguf")
    layer = model.model.layers[1]
    checks = {
        "blk.1.attn_q.weight": (
            layer.self_attn.q_proj,
            rope_row_order(cfg.hidden_size, cfg.num_attention_heads),
        ),
        "blk.1.attn_k.weight": (
            layer.self_attn.k_proj,
            rope_row_order(layer.self_attn.k_proj.out_features, cfg.num_key_value_heads),
        ),
        "blk.1.attn_v.weight": (layer.self_attn.v_proj, None),
        "blk.1.ffn_down.weight": (layer.mlp.down_proj, None),
    }
    for name, (lin, rows) in checks.items():
        got = tensors[name]
        exp = _expected(lin, rows)
        assert got.shape == exp.shape, name
        np.testing.assert_array_equal(got, exp, err_msg=name)  # exact: only fp16 d/m, applied in both
        # and the fp16 rounding is all: against leanlm's fp32 dequantized weight it is close, not equal
        leanlm_w = lowbit.fake_quantize(lin.weight.detach(), bits, g)
        leanlm_w = (leanlm_w[rows] if rows is not None else leanlm_w).numpy()
        assert np.abs(got - leanlm_w).max() <= 2e-3 * np.abs(leanlm_w).max()
    np.testing.assert_array_equal(
        tensors["token_embd.weight"], model.model.embed_tokens.weight.detach().half().float().numpy()
    )
    np.testing.assert_array_equal(
        tensors["blk.1.attn_norm.weight"], layer.input_layernorm.weight.detach().numpy()
    )
    assert "output.weight" not in tensors  # tied embedding

    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    f = reader.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.block_count"].contents() == cfg.num_hidden_layers
    assert f["llama.attention.head_count_kv"].contents() == cfg.num_key_value_heads
    tokens = f["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == len(tokenizer) and tokens[100] == tokenizer.convert_ids_to_tokens(100)
    assert f["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert f["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert f["tokenizer.ggml.pre"].contents() == "smollm"  # the embedded model's vocabulary


def test_q4_1_block_bytes_hand_computed():
    codes = torch.arange(32, dtype=torch.uint8).remainder(16).reshape(1, 32)
    blocks = q4_1_blocks(codes, torch.tensor([[0.5]]), torch.tensor([[3]], dtype=torch.uint8), 32)
    assert blocks.shape == (1, 20)
    assert blocks[0, :2].view(np.float16)[0] == np.float16(0.5)
    assert blocks[0, 2:4].view(np.float16)[0] == np.float16(-1.5)
    # byte j: weight j low nibble, weight j + 16 high nibble (both are j % 16 here)
    assert blocks[0, 4:].tolist() == [j | (j << 4) for j in range(16)]


def test_export_cli_gguf_and_bad_inputs(tmp_path, tiny_model, tokenizer, capsys):
    for spec, name in (
        (QuantSpec("int", 2, 32), "ok"),
        (QuantSpec("int", 2, 16), "g16"),
        (QuantSpec("nf3", 3, 32), "nf3"),
    ):
        m = copy.deepcopy(tiny_model)
        attach_quantization_config(m, spec)
        m.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = json.loads(
        run_cli(
            cli.export,
            "bitdistiller-export",
            [str(tmp_path / "ok"), str(tmp_path / "gg"), "--format", "gguf"],
        )
    )
    assert out["bytes"] == (tmp_path / "gg" / "model.gguf").stat().st_size > 0
    assert "multiple of 32" in fails(capsys, tmp_path / "g16", tmp_path / "x", "--format", "gguf")
    assert "NF3" in fails(capsys, tmp_path / "nf3", tmp_path / "x", "--format", "gguf")
    assert "gguf" in fails(capsys, tmp_path / "ok", tmp_path / "x", "--format", "onnx")
    fails(capsys, tmp_path / "missing", tmp_path / "x", "--format", "gguf")
