"""Loss, gradients through the straight-through estimator, the lambda ramp, and a short Trainer run."""

import copy
import math

import pytest
import torch

from leanlm.core.errors import UserError
from leanlm.dllm import DLLM, DLLMConfig
from leanlm.dllm.loss import exec_ratio, lambda_schedule, ratio_loss
from leanlm.dllm.train import DLLM_RECIPE, finetune, lr_lambdas, param_groups


def test_lambda_sine_ramp():
    assert lambda_schedule(0.0, 5.0) == 0.0
    assert lambda_schedule(0.5, 5.0) == pytest.approx(5.0 * math.sin(math.pi / 4))
    assert lambda_schedule(1.0, 5.0) == pytest.approx(5.0)
    assert lambda_schedule(3.0, 5.0) == pytest.approx(5.0)
    assert lambda_schedule(0.25, 5.0, ramp=0.5) == pytest.approx(5.0 * math.sin(math.pi / 4))
    assert lambda_schedule(0.5, 5.0, ramp=0.5) == lambda_schedule(0.9, 5.0, ramp=0.5) == pytest.approx(5.0)


def test_ratio_loss_by_hand():
    execs = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    # token ratios 0.5 and 1.0 (third masked): |0.5-0.5| + |1-0.5| over 2 tokens
    assert float(ratio_loss(execs, mask, 0.5)) == pytest.approx(0.25)
    # batch scope: only the mean over tokens is pulled, |(0.5 + 1.0) / 2 - 0.5|
    assert float(ratio_loss(execs, mask, 0.5, scope="batch")) == pytest.approx(0.25)
    assert float(ratio_loss(execs, mask, 0.75, scope="batch")) == pytest.approx(0.0)
    assert float(ratio_loss(execs, mask, 0.75)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="scope"):
        ratio_loss(execs, mask, 0.5, scope="sequence")


def test_batch_scope_reaches_the_model_loss_and_bad_scope_fails(tiny_model, tokenizer):
    config = DLLMConfig(start_layer=1, target=0.9, ratio_scope="batch", lambda_max=3.0)
    d = DLLM(copy.deepcopy(tiny_model), config).train()  # Gumbel sampling: some tokens skip a block
    batch = _batch(tokenizer)
    torch.manual_seed(0)
    out = d(batch["input_ids"], batch["attention_mask"], batch["labels"])
    real = batch["attention_mask"].bool().clone()
    real[:, :2] = False
    per_token = out.execs.mean(-1)[real]
    assert (per_token > 0.9).any() and (per_token < 0.9).any()  # the two scopes differ on this batch
    assert torch.allclose(out.ratio_loss, (exec_ratio(out.execs, real) - 0.9).abs())
    assert not torch.allclose(out.ratio_loss, ratio_loss(out.execs, real, 0.9))
    assert torch.allclose(out.loss, out.ce_loss + 3.0 * out.ratio_loss)
    with pytest.raises(UserError, match="ratio_scope"):
        DLLMConfig(ratio_scope="layer").validate()


def _batch(tokenizer):
    from leanlm.core.sft import PaddingCollator, tokenize_example

    feats = [
        tokenize_example(tokenizer, f"Question {i}: what is {i}+{i}?", f" {2 * i}", max_length=32)
        for i in range(3)
    ]
    return PaddingCollator(tokenizer.pad_token_id)(feats)


def test_router_gradients_flow_through_ratio_loss_and_ce(tiny_model, tokenizer):
    d = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1)).train()
    batch = _batch(tokenizer)
    torch.manual_seed(0)
    out = d(**batch)
    assert out.execs.requires_grad
    loss = ratio_loss(out.execs, batch["attention_mask"].bool(), 0.5)
    (grads_ratio,) = torch.autograd.grad(loss, [d.routers["1"].down.weight], retain_graph=True)
    assert grads_ratio.abs().sum() > 0 and torch.isfinite(grads_ratio).all()
    (grads_ce,) = torch.autograd.grad(out.ce_loss, [d.routers["2"].up.weight])
    assert grads_ce.abs().sum() > 0  # the CE reaches routers through the gate and the key mask
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    assert trainable and all("routers." in n or "lora_" in n for n in trainable)
    assert any(".q_proj.lora_A" in n for n in trainable) and not any(
        "o_proj" in n or "mlp" in n for n in trainable
    )


def test_training_forward_equals_eval_for_fixed_decisions(tiny_model, tokenizer):
    """The differentiable (renormalised) attention is the boolean-masked one up to 1e-6."""
    d = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1, lora_dropout=0.0))
    batch = _batch(tokenizer)
    override = (
        torch.rand(1, batch["input_ids"].shape[1], d.num_layers, generator=torch.Generator().manual_seed(1))
        > 0.4
    )
    override[:, :2] = True
    train_logits = d.train()(batch["input_ids"], batch["attention_mask"], exec_override=override).logits
    eval_logits = d.eval()(batch["input_ids"], batch["attention_mask"], exec_override=override).logits
    real = batch["attention_mask"].bool()
    assert torch.allclose(train_logits[real], eval_logits[real], atol=1e-4)


def test_short_finetune_moves_ratio_toward_target(tiny_model, tokenizer, tmp_path):
    from leanlm.core.sft import tokenize_example

    d = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1, target=0.5, lambda_max=5.0))
    feats = [tokenize_example(tokenizer, f"Say {i}.", f" {i} {i} {i}", max_length=24) for i in range(16)]
    before = d.eval()(torch.tensor([feats[0]["input_ids"]])).execs.mean()
    flags = DLLM_RECIPE.override(
        epochs=1,
        batch_size=4,
        max_steps=12,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        logging_steps=4,
        save_steps=10,
    )
    summary = finetune(d, tokenizer, feats, tmp_path / "run", flags, router_lr=1e-1)
    assert summary["steps"] == 12
    after = d.eval()(torch.tensor([feats[0]["input_ids"]])).execs.mean()
    assert before > 0.9 and after < before - 0.1
    assert any("exec_ratio" in h for h in summary["history"])
    assert (tmp_path / "run" / "checkpoint-10" / "dllm_trainable.pt").exists()
    groups = param_groups(d, 1e-3, 1e-2, 0.02)
    assert sorted((g["lr"], g["weight_decay"]) for g in groups) == [(1e-3, 0.02), (1e-2, 0.0), (1e-2, 0.02)]


def test_loss_on_labelled_positions_equals_full_logits_ce(tiny_model, tokenizer):
    from leanlm.dllm.loss import response_ce

    d = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1)).eval()
    batch = _batch(tokenizer)
    full = d(batch["input_ids"], batch["attention_mask"]).logits
    out = d(**batch, lambda_now=2.0)
    assert torch.allclose(out.ce_loss, response_ce(full, batch["labels"]), atol=1e-5)
    real = batch["attention_mask"].bool()
    real[:, :2] = False  # reserved tokens are not part of the ratio loss
    assert torch.allclose(out.loss, out.ce_loss + 2.0 * ratio_loss(out.execs, real, 0.5))


def test_logged_exec_ratio_ignores_padding_and_reserved_tokens():
    execs = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])
    mask = torch.tensor([[True, True, False]])  # third token: padding (its routers decide anything)
    assert float(exec_ratio(execs, mask)) == pytest.approx((0.5 + 0.25) / 2)


def test_router_lr_constant_after_warmup_while_lora_decays():
    groups = [{"router": True}, {"router": False}, {}]
    const, cos, cos2 = lr_lambdas(groups, warmup_steps=4, total_steps=20, router_schedule="constant")
    assert [const(s) for s in (0, 2, 4, 12, 19)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert cos(2) == 0.5 and cos(4) == 1.0 and cos(12) == pytest.approx(0.5) and cos(20) == pytest.approx(0.0)
    assert cos2(19) == cos(19)
    assert all(f(12) == pytest.approx(0.5) for f in lr_lambdas(groups, 4, 20, "cosine"))  # the original
    with pytest.raises(Exception, match="router_schedule"):
        lr_lambdas(groups, 4, 20, "linear")


def test_finetune_router_schedule_constant_keeps_router_lr(tiny_model, tokenizer, tmp_path):
    """The plateau: with the routers on the LoRA's cosine their LR is ~0 when lambda peaks."""
    from leanlm.core.sft import tokenize_example

    d = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1, target=0.5))
    feats = [tokenize_example(tokenizer, f"Say {i}.", f" {i}", max_length=16) for i in range(8)]
    flags = DLLM_RECIPE.override(
        epochs=1,
        batch_size=4,
        max_steps=6,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        logging_steps=1,
        save_steps=100,
        resume=False,
    )
    kw = {"router_lr": 2e-2}
    summary = finetune(d, tokenizer, feats, tmp_path / "c", flags, router_schedule="constant", **kw)
    last = summary["history"][-1]
    assert last["router_lr"] == pytest.approx(2e-2) and last["learning_rate"] == pytest.approx(2e-2)
    d2 = DLLM(copy.deepcopy(tiny_model), DLLMConfig(start_layer=1, target=0.5))
    last_cos = finetune(d2, tokenizer, feats, tmp_path / "k", flags, **kw)["history"][-1]
    assert last_cos["router_lr"] < 2e-2 * 0.1
