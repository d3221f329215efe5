"""Teacher-forced draft statistics equal what decoding measures (diagnostics.teacher_forced_*)."""

import copy

import pytest
import torch

from leanlm.bita.calibration import collect_calibration
from leanlm.bita.decoding import BiTADecoder, greedy_reference
from leanlm.bita.diagnostics import (
    rank_summary,
    simulate_tree,
    teacher_forced_calibration,
    teacher_forced_kv,
    teacher_forced_ranks,
    teacher_forced_top,
)
from leanlm.bita.model import BiTAConfig, BiTAModel
from leanlm.bita.trees import TreeSpec

PROMPTS = [[1, 17, 99, 4031, 250], [5, 6, 7], [88, 4000, 12, 9, 9, 301, 77]]


def test_simulate_tree_by_hand():
    """Ranks per position (M=2); answer of 7 tokens. Chain 1-1 and width-2 tree 2, by hand."""
    ranks = [
        [0, 0],  # s=0: drafts answer[1], answer[2] both right
        [5, 0],
        [1, 3],
        [0, 1],  # s=3
        [0, 0],
        [1, None],
        [None, None],
    ]
    # prefill keeps 1 (t=1); s=0 (0,0): chain keeps 3 (t=4); s=3 (0,1): keeps 2 (t=6); s=5 (1,.): 1 (t=7)
    assert simulate_tree(ranks, TreeSpec.from_widths([1, 1])) == [1, 3, 2, 1]
    # tree "2" (ranks 0 and 1 of mask 0): t=1 s=0 r0=0 keep 2 (t=3); s=2 r0=1 keep 2 (t=5);
    # s=4 r0=0 keep 2 (t=7)
    assert simulate_tree(ranks, TreeSpec.from_widths([2])) == [1, 2, 2, 2]
    # the last step is cut at the answer's end: 3 tokens, all drafts right
    assert simulate_tree([[0, 0], [0, None], [None, None]], TreeSpec.from_widths([1, 1])) == [1, 2]
    summary = rank_summary([ranks], [TreeSpec.from_widths([1, 1]), TreeSpec.from_widths([2])])
    assert summary["mat"] == {"1-1": pytest.approx(7 / 4), "2": pytest.approx(7 / 4)}
    assert summary["masks"][0] == {"mask": 0, "n": 6, "top1": 3 / 6, "top5": 5 / 6}
    assert summary["masks"][1]["n"] == 5 and summary["masks"][1]["top1"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="max_rank"):
        rank_summary([ranks], [TreeSpec.from_widths([12])], max_rank=10)


def test_teacher_forced_top_equals_the_decoders_drafts(tiny_bita, tiny_model):
    """The mask group's top-10 ids at every step of a chain decode (the calibration record) are the
    teacher-forced ones at the same position; precomputed real K/V give the same."""
    dec = BiTADecoder(tiny_bita, "1-1-1")
    dec.record_ranks = 10
    checked = 0
    for prompt in PROMPTS:
        dec.record = []
        out = dec.generate(prompt, 20)
        assert out.tokens == greedy_reference(tiny_model, prompt, 20)
        top = teacher_forced_top(tiny_bita, prompt, out.tokens, 10)
        kv = teacher_forced_kv(tiny_bita, prompt, out.tokens)
        assert torch.equal(teacher_forced_top(tiny_bita, prompt, out.tokens, 10, real_kv=kv), top)
        for produced, rows in dec.record:
            if produced < len(out.tokens):
                assert top[produced - 1].tolist() == rows
                checked += 1
    assert checked >= 3 * 8


def _repeating_adapter() -> BiTAModel:
    """A tied-embedding random tiny model falls into repeating one token (a different one per
    prompt). Masks embedded as the token PROMPTS[2] falls into draft that token, so decoding
    PROMPTS[2] accepts long runs while the other prompts reject the drafts."""
    from leanlm.core.testing.tiny_models import tiny_model

    base = tiny_model("llama", tie_word_embeddings=True)
    token = greedy_reference(base, PROMPTS[2], 4)[-1]
    bita = BiTAModel(base, BiTAConfig(num_masks=3, num_prefix=4, prefix_dropout=0.0)).eval()
    with torch.no_grad():
        bita.mask_embeddings.copy_(base.get_input_embeddings().weight[token].expand_as(bita.mask_embeddings))
    return bita


@pytest.fixture(scope="module")
def repeating():
    return _repeating_adapter()


@pytest.mark.parametrize("tree", ["1", "1-1", "1-1-1", "3-2-1", "2-2"])
def test_simulated_acceptance_equals_decoding(repeating, tree):
    spec = TreeSpec.parse(tree, 3)
    kept = {}
    for i, prompt in enumerate(PROMPTS):
        out = BiTADecoder(repeating, spec).generate(prompt, 24)
        ranks = teacher_forced_ranks(repeating, prompt, out.tokens)
        assert simulate_tree(ranks, spec) == out.accepted
        kept[i] = out.accepted
    assert max(kept[2]) == 1 + spec.depth  # whole draft paths accepted
    assert max(kept[0]) == 1  # drafts rejected


def test_teacher_forced_calibration_equals_collect_calibration(repeating):
    decoded = collect_calibration(repeating, PROMPTS, max_new_tokens=24, max_rank=10)
    pairs = [(p, BiTADecoder(repeating, "1").generate(p, 24).tokens) for p in PROMPTS]
    forced = teacher_forced_calibration(repeating, pairs, max_rank=10)
    assert forced.steps == decoded.steps > 0
    assert forced.rank_counts == decoded.rank_counts
    assert forced.path_counts == decoded.path_counts
    assert forced.path_counts.get((0, 0, 0), 0) > 0


def test_teacher_forced_keeps_training_mode(tiny_bita):
    bita = copy.deepcopy(tiny_bita).train()
    teacher_forced_ranks(bita, [1, 2, 3], [4, 5, 6, 7])
    assert bita.training
