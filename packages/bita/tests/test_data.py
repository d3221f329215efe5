"""Packed training layout: hand-computed mask, labels, positions, truncation, and the packed loss
equal to running every group on its own."""

import random

import pytest
import torch

from leanlm.bita.data import build_dataset, build_example, packed_masks
from leanlm.core.sft import IGNORE_INDEX, PaddingCollator

V = 1000  # vocab size: mask ids are 1000, 1001
SRC = [10, 11]
TGT = [20, 21, 22, 23, 24, 25]

# rows/cols: 5 real tokens (src + tgt[:3]), then 4 groups of 2 masks
EXPECTED_VISIBLE = """
1000000000000
1100000000000
1110000000000
1111000000000
1111100000000
1100010000000
1100011000000
1110000100000
1110000110000
1111000001000
1111000001100
1111100000010
1111100000011
"""


def test_example_layout_and_labels():
    ex = build_example(SRC, TGT, num_masks=2, vocab_size=V, max_groups=4, cutoff=64)
    assert ex["input_ids"] == [10, 11, 20, 21, 22] + [1000, 1001] * 4
    assert ex["labels"] == [IGNORE_INDEX] * 5 + [21, 22, 22, 23, 23, 24, 24, 25]
    assert (ex["freeze_len"], ex["num_groups"], ex["seq_len"]) == (5, 4, 13)


def test_attention_mask_hand_computed():
    visible, prefix, pos = packed_masks(torch.tensor([5]), torch.tensor([4]), torch.tensor([13]), 2, T=13)
    expected = torch.tensor([[int(c) for c in row] for row in EXPECTED_VISIBLE.split()], dtype=torch.bool)
    assert torch.equal(visible[0], expected)
    assert prefix[0].tolist() == [False] * 5 + [True] * 8
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 2, 3, 3, 4, 4, 5, 5, 6]


def test_padding_rows_and_columns():
    a = build_example(SRC, TGT, num_masks=2, vocab_size=V, max_groups=4, cutoff=64)
    b = build_example(SRC, TGT[:4], num_masks=2, vocab_size=V, max_groups=4, cutoff=64)
    batch = PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)([a, b])
    assert batch["input_ids"].shape == (2, 16)  # 13 padded to a multiple of 4
    assert batch["labels"][1, b["seq_len"] :].eq(IGNORE_INDEX).all()
    vis, prefix, _ = packed_masks(batch["freeze_len"], batch["num_groups"], batch["seq_len"], 2, T=16)
    n = b["seq_len"]
    assert not vis[1, :n, n:].any()  # nobody sees padding
    assert torch.equal(vis[1, n:, :], torch.eye(16, dtype=torch.bool)[n:])  # padding sees itself only
    assert not prefix[1, n:].any()


def test_random_windows_and_resampling():
    tgt = list(range(100, 300))
    ex = build_example(
        [1, 2, 3], tgt, num_masks=3, vocab_size=V, max_groups=64, cutoff=2048, rng=random.Random(5)
    )
    G, F = ex["num_groups"], ex["freeze_len"]
    assert G == 64
    s_last = F - 3
    s0 = s_last - G + 1
    labels = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert labels == [t for j in range(G) for t in tgt[s0 + j + 1 : s0 + j + 4]]
    data = build_dataset([([1, 2, 3], tgt)], num_masks=3, vocab_size=V, resample=4, seed=0)
    assert len(data) == 4 and len({d["freeze_len"] for d in data}) > 1  # fresh windows per copy


def test_truncation_leaves_room_for_targets():
    src = list(range(1, 101))  # longer than the cutoff: the original kept no target at all
    tgt = list(range(200, 250))
    ex = build_example(src, tgt, num_masks=3, vocab_size=V, max_groups=64, cutoff=64)
    assert ex is not None and ex["seq_len"] <= 64
    assert ex["input_ids"][:32] == src[-32:]  # cut from the left to half the cutoff
    assert ex["num_groups"] >= 1 and sum(t != IGNORE_INDEX for t in ex["labels"]) == 3 * ex["num_groups"]
    assert build_example([1, 2], [5, 6, 7], num_masks=3, vocab_size=V) is None  # no full window
    with pytest.raises(ValueError):
        build_example(src, tgt, num_masks=3, vocab_size=V, cutoff=6)


def group_logits(m, dec, ctx: torch.Tensor) -> torch.Tensor:
    """Logits [M, V] of one mask group after context ``ctx``, run as its own sequence."""
    from leanlm.bita.trees import StepTree

    lay = StepTree([-1], dec.depth)
    with torch.no_grad():
        h = dec.run_once(ctx, torch.zeros(0, dtype=torch.long), lay)
        return m.logits(h[lay.group_rows(0)])


@pytest.mark.parametrize("training_forward", ["joint", "two_pass"])
def test_packed_loss_equals_groups_run_separately(tiny_bita, training_forward, monkeypatch):
    """The packed forward's loss equals the mean CE of every group run as its own sequence."""
    from leanlm.bita.decoding import BiTADecoder

    m = tiny_bita
    monkeypatch.setattr(m.config, "training_forward", training_forward)
    Vm = m.vocab_size
    src, tgt = [5, 17, 99, 4], [301, 302, 303, 304, 305, 306, 307, 308]
    ex = build_example(src, tgt, num_masks=3, vocab_size=Vm, max_groups=64, cutoff=128)
    ex2 = build_example(src[:2], tgt[:6], num_masks=3, vocab_size=Vm, max_groups=64, cutoff=128)
    batch = PaddingCollator(0, pad_to_multiple_of=4)([ex, ex2])
    with torch.no_grad():
        packed = m(**batch)["loss"]
    dec = BiTADecoder(m, "1-1-1")
    ce = []
    for s, t in [(src, tgt), (src[:2], tgt[:6])]:
        for j in range(len(t) - 3):
            logits = group_logits(m, dec, torch.tensor(s + t[:j]))
            ce.append(
                torch.nn.functional.cross_entropy(logits, torch.tensor(t[j + 1 : j + 4]), reduction="none")
            )
    assert torch.allclose(packed, torch.cat(ce).mean(), atol=1e-5)


def test_two_pass_loss_and_gradients_equal_joint(tiny_bita):
    """Real tokens computed without autograd (two_pass) give the joint forward's loss and adapter
    gradients, on a padded batch whose examples differ in prompt length, window start and groups."""
    import copy
    import random

    m = copy.deepcopy(tiny_bita)
    with torch.no_grad():  # a non-initial adapter, so the gradients are not special
        m.prefix.add_(0.05 * torch.randn_like(m.prefix))
    rng = random.Random(3)
    V = m.vocab_size
    examples = []
    for n_src, n_tgt, groups in [(9, 30, 7), (3, 12, 64), (20, 25, 4)]:
        src = [rng.randrange(3, V) for _ in range(n_src)]
        tgt = [rng.randrange(3, V) for _ in range(n_tgt)]
        examples.append(
            build_example(src, tgt, num_masks=3, vocab_size=V, max_groups=groups, cutoff=64, rng=rng)
        )
    assert len({(e["freeze_len"], e["num_groups"]) for e in examples}) == 3
    batch = PaddingCollator(0, pad_to_multiple_of=4)(examples)
    results = {}
    for mode in ("joint", "two_pass"):
        m.zero_grad()
        m.config.training_forward = mode
        loss = m(**batch)["loss"]
        loss.backward()
        results[mode] = (loss.detach(), m.prefix.grad.clone(), m.mask_embeddings.grad.clone())
    (lj, pj, ej), (lt, pt, et) = results["joint"], results["two_pass"]
    assert pj.abs().sum() > 0 and ej.abs().sum() > 0
    assert torch.allclose(lj, lt, atol=1e-5)
    assert torch.allclose(pj, pt, atol=1e-5, rtol=1e-4)
    assert torch.allclose(ej, et, atol=1e-5, rtol=1e-4)


def test_mask_accuracy_counts_each_group_run_separately(tiny_bita):
    """Teacher-forced top-1/top-3 hits per mask equal those of every group run as its own sequence."""
    from leanlm.bita.decoding import BiTADecoder
    from leanlm.bita.diagnostics import mask_accuracy

    m = tiny_bita
    rng = random.Random(5)
    pairs = [
        ([rng.randrange(3, 500) for _ in range(n)], [rng.randrange(3, 500) for _ in range(t)])
        for n, t in [(4, 9), (2, 7), (6, 5)]
    ]
    dec = BiTADecoder(m, "1-1-1")

    def group_top(ctx):
        return group_logits(m, dec, ctx).topk(3, -1).indices

    # make the first group of the first pair right on every mask (its context is the prompt alone)
    pairs[0][1][1:4] = group_top(torch.tensor(pairs[0][0]))[:, 0].tolist()
    got = mask_accuracy(m, pairs, top_k=3, batch_size=2)
    hits1, hits3, n = [0] * 3, [0] * 3, [0] * 3
    for s, t in pairs:
        for j in range(len(t) - 3):
            top = group_top(torch.tensor(s + t[:j]))
            for k in range(3):
                n[k] += 1
                hits1[k] += int(top[k, 0] == t[j + 1 + k])
                hits3[k] += int(t[j + 1 + k] in top[k].tolist())
    assert [x["n"] for x in got["masks"]] == n
    assert [round(x["top1"] * n[k]) for k, x in enumerate(got["masks"])] == hits1
    assert [round(x["top3"] * n[k]) for k, x in enumerate(got["masks"])] == hits3
    assert min(hits1) >= 1 and sum(n) > sum(hits3)  # hits and misses on every mask
