"""Saved QAT checkpoints refuse plain transformers loudly; packed exports carry the metadata GPTQ loaders need."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from leanlm.bitdistiller.checkpoint import (
    LATENT_MODEL_TYPE,
    attach_quantization_config,
    hf_config,
    load_model_for_eval,
)
from leanlm.bitdistiller.export import export_packed
from leanlm.bitdistiller.modules import quantize_model
from leanlm.bitdistiller.quant import QuantSpec
from leanlm.core.errors import UserError
from leanlm.core.models import load_model


def test_qat_checkpoint_fails_in_plain_transformers_and_loads_in_leanlm(tmp_path, tiny_model, tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    m = quantize_model(copy.deepcopy(tiny_model), QuantSpec("int", 2, 32))
    attach_quantization_config(m, QuantSpec("int", 2, 32))
    copy.deepcopy(m).save_pretrained(tmp_path / "copy")  # a copy seals its own saves
    m.save_pretrained(tmp_path / "ckpt")
    m.save_pretrained(tmp_path / "ckpt")  # saving again over a sealed folder: still sealed, not sealed twice
    tokenizer.save_pretrained(tmp_path / "ckpt")
    for folder in (tmp_path / "ckpt", tmp_path / "copy"):
        raw = json.loads((folder / "config.json").read_text())
        assert raw["model_type"] == LATENT_MODEL_TYPE and "leanlm-bitdistiller" in raw["leanlm_note"]
        assert raw["quantization_config"]["model_type"] == "llama"
        with pytest.raises(ValueError, match=LATENT_MODEL_TYPE):
            AutoModelForCausalLM.from_pretrained(folder)
        with pytest.raises(ValueError, match=LATENT_MODEL_TYPE):
            AutoConfig.from_pretrained(folder)
    with pytest.raises(UserError, match="bitdistiller-export"):  # core's loader: one line, not a traceback
        load_model(str(tmp_path / "ckpt"), device="cpu")
    config = hf_config(tmp_path / "ckpt")
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    loaded, _, spec = load_model_for_eval(str(tmp_path / "ckpt"), device="cpu")
    assert spec == QuantSpec("int", 2, 32)
    ids = torch.tensor([[5, 9, 11, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, m(ids).logits, rtol=0, atol=0)


def test_packed_export_has_pt_format_metadata(tmp_path, tiny_model, tokenizer):
    """GPTQModel.load refuses a safetensors file without {"format": "pt"}."""
    from safetensors import safe_open

    spec = QuantSpec("int", 4, 32)
    export_packed(quantize_model(copy.deepcopy(tiny_model), spec), tokenizer, tmp_path, spec)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "pt"  # (plus the names of tied tensors safetensors dropped)
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["checkpoint_format"], qc["sym"], qc["desc_act"]) == (
        "gptq",
        "gptq_v2",
        False,
        False,
    )
