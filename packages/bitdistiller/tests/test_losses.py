"""Each loss against a direct formula on small logits; gamma; one training step lowers the KD loss."""

from __future__ import annotations

import math

import pytest
import torch

from leanlm.bitdistiller.losses import build_loss, teacher_confidence


def _direct_kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 5, generator=g)
    t = torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[1, 2, 3], [4, 0, -100]])
    return s, t, labels


def _per_seq_mean(fn, s, t, labels):
    total = 0.0
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if labels[b, i] != -100:
                total += fn(torch.softmax(s[b, i], -1).tolist(), torch.softmax(t[b, i], -1).tolist())
    return total / s.shape[0]


def test_forward_reverse_cakld_jsd_match_direct_formulas(logits):
    s, t, labels = logits
    fwd = _per_seq_mean(lambda ps, pt: _direct_kl(pt, ps), s, t, labels)
    rev = _per_seq_mean(lambda ps, pt: _direct_kl(ps, pt), s, t, labels)
    assert build_loss("forward")(s, t, labels).item() == pytest.approx(fwd, rel=1e-5)
    assert build_loss("reverse")(s, t, labels).item() == pytest.approx(rev, rel=1e-5)
    assert build_loss("cakld", 0.3)(s, t, labels).item() == pytest.approx(0.3 * rev + 0.7 * fwd, rel=1e-5)

    def jsd(ps, pt):
        m = [0.5 * a + 0.5 * b for a, b in zip(pt, ps)]
        return 0.5 * _direct_kl(pt, m) + 0.5 * _direct_kl(ps, m)

    assert build_loss("jsd")(s, t, labels).item() == pytest.approx(_per_seq_mean(jsd, s, t, labels), rel=1e-5)


def test_tlsd_and_ce_match_direct_formulas(logits):
    s, t, labels = logits
    expect = 0.0
    for b in range(2):
        ce_t, soft = [], []
        for i in range(2):  # positions 0..T-2 predict labels 1..T-1
            y = labels[b, i + 1].item()
            if y == -100:
                continue
            pt = torch.softmax(t[b, i], -1)
            ce_t.append(-math.log(pt[y].item()))
            soft.append(-(pt * torch.log_softmax(s[b, i], -1)).sum().item())
        w = torch.softmax(torch.tensor(ce_t) / 10, 0).tolist()
        expect += sum(wi * si for wi, si in zip(w, soft))
    assert build_loss("tlsd")(s, t, labels).item() == pytest.approx(expect / 2, rel=1e-5)
    nll = [-torch.log_softmax(s[b, i], -1)[labels[b, i + 1]].item() for b, i in ((0, 0), (0, 1), (1, 0))]
    assert build_loss("ce")(s, None, labels).item() == pytest.approx(sum(nll) / 3, rel=1e-5)


def test_gamma_is_mean_top1_over_non_padding(tiny_model):
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        top1 = torch.softmax(tiny_model(input_ids=ids, attention_mask=mask).logits, -1).amax(-1)
    expect = top1[mask.bool()].mean().item()
    batches = [{"input_ids": ids, "attention_mask": mask}] * 3
    assert teacher_confidence(tiny_model, batches, max_batches=2) == pytest.approx(expect, rel=1e-5)


def test_one_training_step_lowers_kd_loss(tiny_model):
    import copy

    from leanlm.bitdistiller.modules import quantize_model
    from leanlm.bitdistiller.quant import QuantSpec

    teacher = tiny_model
    student = quantize_model(copy.deepcopy(tiny_model), QuantSpec("int", 2, 32))
    student.train()
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    with torch.no_grad():
        t_logits = teacher(ids).logits
    loss_fn = build_loss("cakld", 0.5)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    before = loss_fn(student(ids).logits, t_logits, labels)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(student(ids).logits, t_logits, labels)
    assert after.item() < 0.8 * before.item()
