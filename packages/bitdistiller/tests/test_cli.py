"""Every console script on tiny_llama (in process through run_cli), the pipeline end to end, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leanlm.bitdistiller import cli
from leanlm.core.console import run_cli


def run(fn, name: str, *argv: str):
    out = run_cli(fn, name, [str(a) for a in argv])
    return json.loads(out) if isinstance(out, str) and out.startswith("{") else out


def fails(capsys, fn, name: str, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        run_cli(fn, name, [str(a) for a in argv])
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_dir, teacher_file):
    """clip -> generate -> mix -> train -> export on tiny_llama, shared by the tests below."""
    root = tmp_path_factory.mktemp("pipeline")
    q = ["--quant-type", "int", "--w-bit", "2", "--group-size", "32"]
    clip = run(
        cli.clip,
        "bitdistiller-clip",
        "--model",
        tiny_dir,
        *q,
        "--n-samples",
        2,
        "--seqlen",
        64,
        "--n-grid",
        4,
        "--dump-clip",
        root / "clip.pt",
        "--save-model",
        root / "clipped",
    )
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": f"Once upon a time {i}"}) + "\n" for i in range(3))
    )
    gen_args = [
        "--model",
        tiny_dir,
        "--dataset",
        prompts,
        "--output",
        root / "gen.jsonl",
        "--max-new-tokens",
        6,
        "--batch-size",
        3,
        "--max-sample",
        3,
    ]
    gen1 = run(cli.generate, "bitdistiller-generate", *gen_args)
    gen2 = run(cli.generate, "bitdistiller-generate", *gen_args)
    mixed = run(
        cli.mix,
        "bitdistiller-mix",
        root / "gen.jsonl",
        teacher_file,
        "--output",
        root / "mix.jsonl",
        "--seed",
        1,
    )
    train = run(
        cli.train,
        "bitdistiller-train",
        root / "mix.jsonl",
        root / "run",
        "--model",
        tiny_dir,
        "--clip",
        root / "clip.pt",
        *q,
        "--max-length",
        64,
        "--max-steps",
        2,
        "--batch-size",
        2,
        "--grad-accum",
        1,
        "--learning-rate",
        1e-4,
        "--save-steps",
        1,
    )
    export = run(
        cli.export, "bitdistiller-export", root / "run" / "final", root / "packed", "--scale-dtype", "fp32"
    )
    return {
        "root": root,
        "clip": clip,
        "gen1": gen1,
        "gen2": gen2,
        "mix": mixed,
        "train": train,
        "export": export,
    }


def test_clip_generate_mix(pipeline):
    root = pipeline["root"]
    assert pipeline["clip"]["layers"] == 20 and (root / "clip.pt").exists()
    assert json.loads((root / "clipped" / "config.json").read_text())["quantization_config"]["bits"] == 2
    assert pipeline["gen1"]["records"] == 3 and pipeline["gen1"]["stats"]["requests"] == 3
    assert pipeline["gen2"]["stats"]["requests"] == 0  # resumed: nothing re-requested
    lines = (root / "gen.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["meta"]["prompt"].startswith("Once upon a time")
    assert pipeline["mix"]["records"] == 3 + 24
    ids = [json.loads(x)["id"] for x in (root / "mix.jsonl").read_text().splitlines()]
    assert len(set(ids)) == len(ids) and ids[:3] != sorted(ids)[:3]


def test_train_checkpoints_and_resume(pipeline, tiny_dir):
    root = pipeline["root"]
    t = pipeline["train"]
    assert t["steps"] == 2 and 0 < t["gamma"] < 1 and t["loss"] == "cakld"
    assert (root / "run" / "checkpoint-2").is_dir()
    qc = json.loads((root / "run" / "checkpoint-2" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitdistiller" and qc["group_size"] == 32
    from transformers import AutoModelForCausalLM

    from leanlm.bitdistiller.checkpoint import LATENT_MODEL_TYPE

    for sealed in ("checkpoint-2", "final"):  # Trainer's saves are sealed: plain transformers refuses them
        with pytest.raises(ValueError, match=LATENT_MODEL_TYPE):
            AutoModelForCausalLM.from_pretrained(root / "run" / sealed)
    import shutil

    shutil.copytree(root / "run", root / "run2")  # keep run/final for the export test
    args = [
        root / "mix.jsonl",
        root / "run2",
        "--model",
        tiny_dir,
        "--group-size",
        32,
        "--max-length",
        64,
        "--batch-size",
        2,
        "--grad-accum",
        1,
        "--save-steps",
        1,
    ]
    again = run(cli.train, "bitdistiller-train", *args, "--max-steps", 2)
    assert again == json.loads(
        (root / "run" / "train_summary.json").read_text()
    )  # finished run: nothing trained again
    more = run(cli.train, "bitdistiller-train", *args, "--max-steps", 3)
    assert more["steps"] == 3 and more["resumed_from"].endswith("checkpoint-2")


def test_clip_on_a_latent_checkpoint_is_one_line(pipeline, capsys):
    root = pipeline["root"]
    err = fails(
        capsys, cli.clip, "bitdistiller-clip", "--model", root / "clipped", "--dump-clip", root / "x.pt"
    )
    assert "latent weights" in err and len(err.strip().splitlines()) == 1


def test_eval_ppl_requantizes_and_export_matches(pipeline):
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.export import PackedLinear

    root = pipeline["root"]
    final = root / "run" / "final"
    res = run(cli.eval_ppl, "bitdistiller-eval-ppl", "--model", final, "--seqlen", 64, "--max-chunks", 2)
    assert res["quant"] == "int2-g32" and res["seqlen"] == 64 and res["ppl"] > 1
    fake, tok, _ = load_model_for_eval(str(final))
    packed, _, spec = load_model_for_eval(str(root / "packed"))
    assert isinstance(packed.model.layers[0].self_attn.v_proj, PackedLinear) and spec.bits == 2
    ids = torch.tensor([tok("To be, or not to be, that is the question")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(packed(ids).logits, fake(ids).logits, rtol=1e-5, atol=1e-5)
    assert pipeline["export"]["packed_linear_bytes"] < 0.1 * pipeline["export"]["other_bytes"]
    ppl_packed = run(
        cli.eval_ppl, "bitdistiller-eval-ppl", "--model", root / "packed", "--seqlen", 64, "--max-chunks", 2
    )
    assert ppl_packed["ppl"] == pytest.approx(res["ppl"], rel=1e-4)


def test_export_int8_head_then_eval_ppl_in_bf16(pipeline):
    """--lm-head int8 export; eval-ppl on it in bf16 (the int4 kernels) stays close to the fp32 packed ppl."""
    from leanlm.core.models import load_model
    from leanlm.core.packed import Int8Linear

    root = pipeline["root"]
    out = run(
        cli.export, "bitdistiller-export", root / "run" / "final", root / "packed8", "--lm-head", "int8"
    )
    assert out["file_bytes"] < pipeline["export"]["file_bytes"]  # the head is int8 instead of fp32
    assert isinstance(load_model(str(root / "packed8"), device="cpu").lm_head, Int8Linear)
    base = run(
        cli.eval_ppl, "bitdistiller-eval-ppl", "--model", root / "packed", "--seqlen", 64, "--max-chunks", 2
    )
    res = run(
        cli.eval_ppl,
        "bitdistiller-eval-ppl",
        "--model",
        root / "packed8",
        "--seqlen",
        64,
        "--max-chunks",
        2,
        "--dtype",
        "bf16",
    )
    assert res["quant"] == "int2-g32"
    assert res["ppl"] == pytest.approx(base["ppl"], rel=0.05) and res["ppl"] != base["ppl"]


def test_eval_scripts_run(pipeline, tiny_dir):
    gsm = run(
        cli.eval_gsm8k,
        "bitdistiller-eval-gsm8k",
        "--model",
        tiny_dir,
        "--limit",
        2,
        "--max-new-tokens",
        4,
        "--group-size",
        32,
    )
    assert gsm["total"] == 2 and 0 <= gsm["accuracy"] <= 1
    he = run(
        cli.eval_humaneval,
        "bitdistiller-eval-humaneval",
        "--model",
        tiny_dir,
        "--limit",
        1,
        "--max-new-tokens",
        4,
    )
    assert he["n_problems"] == 1 and he["pass@1"] == 0.0  # a random model writes no working code
    lm = run(
        cli.eval_tasks,
        "bitdistiller-eval",
        "--model",
        tiny_dir,
        "--tasks",
        "piqa",
        "--limit",
        4,
        "--group-size",
        32,
    )
    assert lm["tasks"]["piqa"]["n"] == 4 and 0 <= lm["avg_acc"] <= 1


def test_bad_inputs_give_one_clear_error(capsys, tmp_path, tiny_dir, pipeline):
    err = fails(capsys, cli.eval_ppl, "bitdistiller-eval-ppl", "--model", tiny_dir, "--w-bit", 5)
    assert "supports 2, 3, 4 bits" in err and "Traceback" not in err
    err = fails(capsys, cli.eval_ppl, "bitdistiller-eval-ppl", "--model", tiny_dir, "--quant-type", "fp4")
    assert "unknown quant type 'fp4'" in err
    from leanlm.core.testing.tiny_models import tiny_llama

    other = tmp_path / "other"
    tiny_llama(hidden_size=96, intermediate_size=192).save_pretrained(other)
    (other / "tokenizer.json").write_bytes((Path(tiny_dir) / "tokenizer.json").read_bytes())
    (other / "tokenizer_config.json").write_bytes((Path(tiny_dir) / "tokenizer_config.json").read_bytes())
    err = fails(
        capsys,
        cli.eval_ppl,
        "bitdistiller-eval-ppl",
        "--model",
        other,
        "--group-size",
        32,
        "--clip",
        pipeline["root"] / "clip.pt",
    )
    assert "for another model" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    err = fails(
        capsys,
        cli.train,
        "bitdistiller-train",
        empty,
        tmp_path / "o",
        "--model",
        tiny_dir,
        "--group-size",
        32,
    )
    assert "no teacher examples" in err
    err = fails(
        capsys,
        cli.clip,
        "bitdistiller-clip",
        "--model",
        tiny_dir,
        "--group-size",
        48,
        "--dump-clip",
        tmp_path / "x.pt",
    )
    assert "does not divide the input size 64 of layer model.layers.0.self_attn.q_proj" in err


def test_console_script_help_and_exit_code():
    exe = Path(sys.executable).parent / "bitdistiller-eval-ppl"
    if not exe.exists():
        pytest.skip("console scripts not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--seqlen" in out.stdout + out.stderr
