"""Calibrated sparse trees: counting, the expected accepted length, and the choice of N nodes."""

import itertools

import pytest

from leanlm.bita.calibration import Calibration, choose_tree, collect_calibration, load_calibration, ranks_of
from leanlm.bita.trees import TreeSpec
from leanlm.core.errors import UserError


def hand_case(smoothing=0.0):
    """10 steps, M=2, top-3. Rank tuples per step (3 = a miss):
    (0,0) x3, (0,1), (0,3) , (1,0), (1,3), (2,3), (3,0), (3,3)."""
    cal = Calibration(num_masks=2, max_rank=3, smoothing=smoothing)
    for ranks in [(0, 0)] * 3 + [(0, 1), (0, 3), (1, 0), (1, 3), (2, 3), (3, 0), (3, 3)]:
        cal.add_step(ranks)
    return cal


def test_counts_by_hand():
    cal = hand_case()
    assert cal.steps == 10
    assert cal.path_counts == {(0,): 5, (0, 0): 3, (0, 1): 1, (1,): 2, (1, 0): 1, (2,): 1}
    # mask 1 counted on its own even after mask 0 missed (step (3, 0))
    assert cal.rank_counts == [[5, 2, 1, 2], [5, 1, 0, 4]]
    assert cal.rank_probability(1, 0) == pytest.approx(0.5)
    assert cal.path_probability((0, 0)) == pytest.approx(0.3)


def test_choose_tree_hand_computed():
    """P: (0) .5, (0,0) .3, (1) .2, then three ties at .1: (2), (0,1), (1,0)."""
    cal = hand_case()
    t3 = choose_tree(cal, 3, 2)
    assert set(t3.paths) == {(0,), (0, 0), (1,)}
    assert cal.expected_accepted(t3) == pytest.approx(1 + 0.5 + 0.3 + 0.2)
    t6 = choose_tree(cal, 6, 2)
    assert set(t6.paths) == {(0,), (0, 0), (1,), (2,), (0, 1), (1, 0)}
    assert cal.expected_accepted(t6) == pytest.approx(2.3)
    assert choose_tree(cal, 1, 1).paths == ((0,),)
    assert choose_tree(cal, 3, 1).paths == ((0,), (1,), (2,))  # depth 1: no (0,0)
    assert t3.label() == "auto:3"


def test_smoothing_orders_unseen_paths_by_the_independent_estimate():
    cal = hand_case(smoothing=1.0)
    # (2, 0) never seen: P = (0 + 1 * p0(2) * p1(0)) / (10 + 1) = (0.1 * 0.5) / 11
    assert cal.path_probability((2, 0)) == pytest.approx(0.05 / 11)
    # (0, 0): (3 + 0.5 * 0.5) / 11
    assert cal.path_probability((0, 0)) == pytest.approx(3.25 / 11)
    t7 = choose_tree(cal, 7, 2)
    assert (2, 0) in t7.paths and (2, 1) not in t7.paths  # p1(0)=.5 > p1(1)=.1


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 5])
def test_choice_is_optimal_against_brute_force(budget):
    """Every prefix-closed tree of `budget` nodes over ranks < 3, depth <= 2: none does better."""
    cal = hand_case(smoothing=1.0)
    nodes = [(r,) for r in range(3)] + [(a, b) for a in range(3) for b in range(3)]
    best = 0.0
    for subset in itertools.combinations(nodes, budget):
        s = set(subset)
        if all(len(p) == 1 or p[:1] in s for p in s):
            best = max(best, cal.expected_accepted(TreeSpec.from_paths(subset)))
    assert cal.expected_accepted(choose_tree(cal, budget, 2)) == pytest.approx(best)


def test_ranks_of():
    truth = [7, 8, 9]
    assert ranks_of(truth, 1, [[1, 8, 2], [9, 4, 5], [0, 0, 0]], 3) == [1, 0, None]
    assert ranks_of(truth, 0, [[1, 2, 3], [8, 4, 5]], 3) == [3, 0]


def test_errors_and_round_trip(tmp_path):
    cal = hand_case()
    with pytest.raises(UserError, match="auto:N"):
        choose_tree(cal, 0, 2)
    with pytest.raises(UserError, match="no steps"):
        choose_tree(Calibration(num_masks=2, max_rank=3), 2, 2)
    cal.save(tmp_path)
    back = load_calibration(tmp_path)
    assert back.path_counts == cal.path_counts and back.rank_counts == cal.rank_counts
    assert TreeSpec.parse("auto:3", 3, back).paths == choose_tree(cal, 3, 3).paths
    assert load_calibration(tmp_path / "nowhere") is None
    (tmp_path / "calibration.json").write_text('{"num_masks": 2}')
    with pytest.raises(UserError, match="malformed"):
        load_calibration(tmp_path)


def test_collect_on_tiny_model_is_consistent(tiny_bita, tokenizer):
    prompts = [tokenizer(t)["input_ids"] for t in ["Hello there", "1, 2, 3, 4, 5,", "The sea is"]]
    cal = collect_calibration(tiny_bita, prompts, max_new_tokens=12, max_rank=5)
    assert cal.meta["prompts"] == 3 and cal.meta["new_tokens"] == 36
    assert cal.steps == sum(cal.rank_counts[0])
    for r in range(5):  # level-0 paths are exactly mask 0's hits at rank r
        assert cal.path_counts.get((r,), 0) == cal.rank_counts[0][r]
    for path, count in cal.path_counts.items():  # a path is never more frequent than its parent
        if len(path) > 1:
            assert count <= cal.path_counts[path[:-1]]
