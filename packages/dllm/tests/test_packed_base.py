"""D-LLM on a packed low-bit base: refused in one line (its LoRA and routers need float linears)."""

from __future__ import annotations

import json

import pytest

from leanlm.core.errors import UserError
from leanlm.core.packed import gptq_quantization_config


def test_packed_folder_refused_by_the_cli_before_loading(tiny_model, tokenizer, piqa_rows, tmp_path):
    from test_data_cli import _run

    folder = tmp_path / "packed"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = gptq_quantization_config(2, 32)  # what bitdistiller-export writes
    (folder / "config.json").write_text(json.dumps(config))
    r = _run("dllm-finetune", piqa_rows, "--model", folder, "--output", tmp_path / "run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "packed low-bit export" in r.stderr and not (tmp_path / "run").exists()


def test_packed_layers_refused_in_process(tiny_model):
    import copy

    from leanlm.core.kernels import lowbit
    from leanlm.core.packed import PackedLinear
    from leanlm.dllm.model import DLLM, DLLMConfig

    base = copy.deepcopy(tiny_model)
    proj = base.model.layers[0].mlp.down_proj
    q = lowbit.quantize_asym(proj.weight.detach().float(), 2, 32)
    base.model.layers[0].mlp.down_proj = PackedLinear.from_codes(q.codes, q.scales, q.zeros, 2, 32)
    with pytest.raises(UserError, match="packed low-bit export"):
        DLLM(base, DLLMConfig())
