"""D-LLM on each supported architecture (tiny random configs): with every block executed its logits
equal HF's own forward; real skipping decodes exactly like the full-recompute reference; training
gradients reach the routers; anything else is refused with one line."""

import copy
import json

import pytest
import torch
from conftest import randomize

from leanlm.core.errors import UserError
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_model
from leanlm.dllm import DLLM, DLLMConfig
from leanlm.dllm.decode import generate, reference_generate


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_routed(request):
    """(arch, float64 D-LLM with random LoRA and ~50%-skipping routers) per architecture."""
    torch.manual_seed(0)
    base = tiny_model(request.param, seed=1).double()
    d = DLLM(base, DLLMConfig(start_layer=1, reserve_initials=2, lora_dropout=0.0)).double()
    return request.param, randomize(d).eval()


def _batch(seed: int, t: int = 11):
    ids = torch.randint(5, 2000, (2, t), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    return ids, mask


def test_all_blocks_executed_equals_hf(arch_routed):
    arch, routed = arch_routed
    ids, mask = _batch(3)  # 11 tokens: longer than the 4-token sliding windows of Mistral/Qwen2/Gemma2/Phi-3
    forced = routed(ids, mask, exec_override=torch.ones(1)).logits
    merged = copy.deepcopy(routed).merge_lora()
    hf = merged.lm(input_ids=ids[:1]).logits[0]
    assert torch.allclose(forced[0], hf, atol=1e-9, rtol=0), (forced[0] - hf).abs().max()
    # the left-padded row equals HF on its real tokens alone (HF's eager Gemma2 gives NaN on padded rows)
    hf_row = merged.lm(input_ids=ids[1:, 3:]).logits[0]
    assert torch.allclose(forced[1, 3:], hf_row, atol=1e-9, rtol=0)
    with routed.model.disable_adapter():  # LoRA is on (so merging it is what is compared)
        plain = routed.lm(input_ids=ids[:1]).logits
    assert not torch.allclose(plain[0], hf, atol=1e-5)
    # the model called outside the D-LLM forward is still plain HF (attention implementation restored)
    assert merged.lm.config._attn_implementation != "leanlm_dllm"


def test_routed_decode_equals_full_recompute(arch_routed):
    arch, routed = arch_routed
    ids, mask = _batch(4, t=6)
    out = generate(routed, ids, mask, max_new_tokens=8)
    assert out.tokens == reference_generate(routed, ids, mask, max_new_tokens=8)
    assert 0.2 < out.stats[0]["decode_exec_ratio"] < 0.95  # the routers really skip
    assert out.tokens[0] == generate(routed, ids[:1], mask[:1], max_new_tokens=8).tokens[0]


def test_training_pass_matches_and_trains_routers(arch_routed):
    arch, routed = arch_routed
    d = copy.deepcopy(routed)
    ids, mask = _batch(5)
    d.eval()
    want = d(ids, mask, exec_override=torch.ones(1)).logits
    d.train()
    soft = d(ids, mask, exec_override=torch.ones(1)).logits  # soft masks at w = 1: the same function
    assert torch.allclose(soft[0], want[0], atol=1e-5)
    labels = ids.masked_fill(mask == 0, -100)
    d(ids, mask, labels=labels).loss.backward()
    grads = [p.grad for p in d.routers.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_phi3_lora_on_fused_qkv():
    d = DLLM(tiny_model("phi3"), DLLMConfig())
    assert d.config.lora_targets == ("qkv_proj",)
    assert any("qkv_proj.lora_A" in n for n, _ in d.named_parameters())


def test_other_architectures_refused():
    from transformers import GPT2Config, GPT2LMHeadModel, OlmoConfig, OlmoForCausalLM

    small = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    for model in (
        OlmoForCausalLM(OlmoConfig(**small)),
        GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2)),
    ):
        with pytest.raises(UserError) as e:
            DLLM(model, DLLMConfig())
        msg = str(e.value)
        assert "\n" not in msg and "Qwen3" in msg and "Phi-3" in msg and model.config.model_type in msg


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_console_scripts_per_architecture(arch, piqa_rows, tmp_path):
    from test_data_cli import _run

    from leanlm.core.testing.tiny_models import tiny_model_dir

    model = tiny_model_dir(arch, tmp_path / arch, num_layers=3)
    out = tmp_path / "run"
    r = _run(
        "dllm-finetune",
        piqa_rows,
        "--model",
        model,
        "--output",
        out,
        "--max_steps",
        2,
        "--batch_size",
        2,
        "--start_layer",
        1,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = tmp_path / "eval.json"
    r = _run("dllm-eval", "--dllm", out / "dllm", "--model", model, "--data", piqa_rows, "--output", res)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(res.read_text())
    assert result["examples"] == 2 and 0 < result["flops_ratio"] <= 1.1


def test_unsupported_folder_refused_by_the_cli_before_loading(piqa_rows, tmp_path):
    from test_data_cli import _run
    from transformers import OlmoConfig, OlmoForCausalLM

    folder = tmp_path / "olmo"
    OlmoForCausalLM(
        OlmoConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
        )
    ).save_pretrained(folder)
    r = _run("dllm-finetune", piqa_rows, "--model", folder, "--output", tmp_path / "run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "olmo" in r.stderr and "Gemma2" in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architectures_on_cuda(arch):
    """fp32 on CUDA: all-executed logits equal HF's, routed cached decode equals the full recompute."""
    torch.manual_seed(0)
    base = tiny_model(arch, seed=1).cuda()
    routed = randomize(DLLM(base, DLLMConfig(start_layer=1, lora_dropout=0.0)).cuda()).eval()
    ids, mask = (x.cuda() for x in _batch(3))
    forced = routed(ids[:1], exec_override=torch.ones(1)).logits[0]
    hf = copy.deepcopy(routed).merge_lora().lm(input_ids=ids[:1]).logits[0]
    assert torch.allclose(forced, hf, atol=1e-4, rtol=1e-4), (forced - hf).abs().max()
    out = generate(routed, ids, mask, max_new_tokens=8)
    assert out.tokens == reference_generate(routed, ids, mask, max_new_tokens=8)
