"""BitDistiller's pipeline on every supported architecture (tiny random configs saved as folders), through
the console scripts: clip -> QAT train (2 steps, clipped init) -> export. The trained checkpoint is sealed
(plain transformers refuses it), and the packed 2-bit export gives the fake-quantized model's logits."""

from __future__ import annotations

import json

import pytest
import torch

from leanlm.bitdistiller import cli
from leanlm.core.console import run_cli
from leanlm.core.testing.tiny_models import ARCHITECTURES

QUANT = ["--quant-type", "int", "--w-bit", "2", "--group-size", "32"]


def run(fn, name: str, *argv) -> dict:
    out = run_cli(fn, name, [str(a) for a in argv])
    return json.loads(out) if isinstance(out, str) and out.startswith("{") else out


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_clip_train_export(arch, tiny_arch_dir, teacher_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from leanlm.bitdistiller.checkpoint import LATENT_MODEL_TYPE, load_model_for_eval
    from leanlm.bitdistiller.export import PackedLinear

    base_dir = tiny_arch_dir(arch)
    clip = run(
        cli.clip,
        "bitdistiller-clip",
        "--model",
        base_dir,
        *QUANT,
        "--n-samples",
        2,
        "--seqlen",
        32,
        "--n-grid",
        4,
        "--dump-clip",
        tmp_path / "clip.pt",
    )
    assert clip["layers"] > 0
    train = run(
        cli.train,
        "bitdistiller-train",
        teacher_file,
        tmp_path / "run",
        "--model",
        base_dir,
        "--clip",
        tmp_path / "clip.pt",
        *QUANT,
        "--max-length",
        48,
        "--max-steps",
        2,
        "--batch-size",
        2,
        "--grad-accum",
        1,
        "--learning-rate",
        1e-4,
    )
    assert train["steps"] == 2
    final = tmp_path / "run" / "final"
    with pytest.raises(ValueError, match=LATENT_MODEL_TYPE):  # no silent un-quantized load outside leanlm
        AutoModelForCausalLM.from_pretrained(final)
    run(cli.export, "bitdistiller-export", final, tmp_path / "packed", "--scale-dtype", "fp32")

    fake, tok, _ = load_model_for_eval(str(final))
    packed, _, spec = load_model_for_eval(str(tmp_path / "packed"))
    assert spec.bits == 2 and any(isinstance(m, PackedLinear) for m in packed.modules())
    assert type(packed).__name__ == json.loads((base_dir / "config.json").read_text())["architectures"][0]
    ids = torch.arange(5, 29).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, fake(ids).logits, rtol=1e-5, atol=1e-5)
