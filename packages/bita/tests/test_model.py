"""Adapter: only mask/prefix train, the prefix is invisible to real tokens, save/load round trip."""

import copy

import pytest
import torch

from leanlm.bita.decoding import BiTADecoder, TreeSpec
from leanlm.bita.model import ADAPTER_FILE, BiTAConfig, BiTAModel, load_bita
from leanlm.core.errors import UserError


def test_only_adapter_trains(tiny_bita):
    trainable = {n for n, p in tiny_bita.named_parameters() if p.requires_grad}
    assert trainable == {"mask_embeddings", "prefix"}
    c = tiny_bita.config
    assert tiny_bita.prefix.shape == (4, c.num_layers, 2, c.num_kv_heads, c.head_dim)  # GQA: kv heads
    assert c.num_kv_heads == 2 and c.num_layers == 4


@pytest.mark.parametrize("engine", ["fast", "hf"])
def test_prefix_invisible_to_context_and_candidates(tiny_bita, tokenizer, engine):
    """Root/candidate logits equal the base model's; mask logits do depend on the prefix."""
    m = copy.deepcopy(tiny_bita)
    ids = tokenizer("The cat sat on the mat and then", add_special_tokens=True)["input_ids"]
    dec = BiTADecoder(m, "3-2-1", engine=engine)
    lay = dec.layout
    cands = torch.tensor([5, 6, 7, 8, 9, 10])  # level 0: 5,6,7; level 1: 8,9; level 2: 10
    ctx = torch.tensor(ids)

    def run():
        with torch.no_grad():
            return m.logits(dec.run_once(ctx, cands, lay))

    logits = run()
    # base model on the spine path root -> 5 -> 8 -> 10 and on a side branch root -> 6
    with torch.no_grad():
        spine = m.base(torch.tensor([ids + [5, 8, 10]])).logits[0, len(ids) - 1 :]
        side = m.base(torch.tensor([ids + [6]])).logits[0, -1]
    torch.testing.assert_close(logits[[0, 1, 4, 6]], spine, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[2], side, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        m.prefix.mul_(3.0).add_(1.0)
    changed = run()
    torch.testing.assert_close(changed[: 1 + lay.C], logits[: 1 + lay.C], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(changed[1 + lay.C :], logits[1 + lay.C :], atol=1e-3)


def test_save_load_round_trip(tiny_bita, tiny_model, tokenizer, tmp_path):
    m = BiTAModel(copy.deepcopy(tiny_model), BiTAConfig(num_masks=2, num_prefix=3, base_model="tiny"), seed=7)
    m.save_adapter(tmp_path)
    assert (tmp_path / ADAPTER_FILE).exists()
    loaded = load_bita(tmp_path, base=copy.deepcopy(tiny_model))
    assert loaded.config.base_model == "tiny" and loaded.num_masks == 2 and loaded.num_prefix == 3
    assert torch.equal(loaded.prefix, m.prefix) and torch.equal(loaded.mask_embeddings, m.mask_embeddings)
    ids = tokenizer("Once upon a time", add_special_tokens=True)["input_ids"]
    a, b = BiTADecoder(m, "3-2").generate(ids, 20), BiTADecoder(loaded, "3-2").generate(ids, 20)
    assert a.tokens == b.tokens and a.accepted == b.accepted
    # a different base model does not fit this adapter
    from leanlm.core.testing.tiny_models import tiny_llama

    with pytest.raises(UserError, match="another model|adapter built"):
        load_bita(tmp_path, base=tiny_llama(num_layers=2))
    with pytest.raises(UserError, match="not a BiTA adapter"):
        load_bita(tmp_path / "missing", base=tiny_model)


def test_adapter_config_written_before_training_forward_loads(tiny_model, tmp_path):
    """bita_config.json from before ``training_forward`` existed loads with the default; a saved
    choice round-trips, and a re-save replaces the files without leaving temporaries behind."""
    import json

    from leanlm.bita.model import CONFIG_FILE

    m = BiTAModel(copy.deepcopy(tiny_model), BiTAConfig(num_masks=2, num_prefix=3, training_forward="joint"))
    m.save_adapter(tmp_path)
    m.save_adapter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ADAPTER_FILE, CONFIG_FILE]
    assert load_bita(tmp_path, base=copy.deepcopy(tiny_model)).config.training_forward == "joint"
    old = json.loads((tmp_path / CONFIG_FILE).read_text())
    del old["training_forward"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(old))
    loaded = load_bita(tmp_path, base=copy.deepcopy(tiny_model))
    assert loaded.config.training_forward == "two_pass" and torch.equal(loaded.prefix, m.prefix)


def test_training_forward_is_checked(tiny_bita):
    with pytest.raises(UserError, match="training_forward must be two_pass or joint, got 'both'"):
        BiTAConfig(training_forward="both").validate()
    from leanlm.bita.data import build_example
    from leanlm.core.sft import PaddingCollator

    m = copy.deepcopy(tiny_bita)
    ex = build_example([5, 17, 99, 4], [301, 302, 303, 304, 305], num_masks=3, vocab_size=m.vocab_size)
    m.config.training_forward = "Joint"  # set after construction: checked when the forward runs
    with pytest.raises(UserError, match="training_forward"):
        m(**PaddingCollator(0, pad_to_multiple_of=4)([ex]))


def test_config_and_tree_errors(tiny_model):
    with pytest.raises(UserError, match="num_masks"):
        BiTAModel(tiny_model, BiTAConfig(num_masks=0))
    with pytest.raises(UserError, match="num_masks"):
        BiTAConfig(num_masks=99).validate()
    with pytest.raises(UserError, match="K"):
        TreeSpec.parse("tri:0", 3)
    with pytest.raises(UserError, match="widths"):
        TreeSpec.parse(0, 3)
    with pytest.raises(UserError, match="levels"):
        TreeSpec.parse("2-2-2-2", 3)
    with pytest.raises(UserError, match="widths"):
        TreeSpec.parse("2-0", 3)
    with pytest.raises(UserError, match="not understood"):
        TreeSpec.parse("a-b", 3)
    with pytest.raises(UserError, match="calibrat"):
        TreeSpec.parse("auto:10", 3)


@pytest.mark.parametrize("bad", ["1,1", "1,", ",1", "3,2,1", "1-", "-1", "1--1", "1 1", "tri:", "5;3"])
def test_ambiguous_tree_forms_are_rejected(bad):
    """The old syntax read '1' and '1,' as K=1 (a 1-1-1 tree): commas and odd forms are refused."""
    with pytest.raises(UserError, match="tree"):
        TreeSpec.parse(bad, 3)


def test_tree_syntax_says_what_it_means():
    one = TreeSpec.parse("1", 3)
    assert one.depth == 1 and one.paths == ((0,),) and one.label() == "1"
    assert TreeSpec.parse(1, 3) == one  # fire turns --tree 1 into an int
    chain = TreeSpec.parse("1-1", 3)
    assert chain.paths == ((0,), (0, 0)) and chain.label() == "1-1"
    assert TreeSpec.parse("tri:5", 3).widths == (5, 4, 3)
    assert TreeSpec.parse("tri:2", 3).widths == (2, 1, 1)
    assert TreeSpec.parse("4-1", 3).widths == (4, 1)
    assert TreeSpec.parse([3, 2, 1], 3).paths == ((0,), (1,), (2,), (0, 0), (0, 1), (0, 0, 0))
    assert TreeSpec.parse(None, 3).label() == "5-4-3"


def test_tree_layout_matches_upper_triangle():
    """K=5, M=3: 12 candidates; each sees the root, the top-1 node of every shallower level, itself."""
    from leanlm.bita.trees import StepTree

    lay = StepTree(TreeSpec.from_widths([5, 4, 3]).parents(), 3)
    assert lay.C == 12 and lay.q == 1 + 12 + 13 * 3
    cand = lay.block[1:13, 1:13]
    for i in range(12):
        level = 0 if i < 5 else 1 if i < 9 else 2
        expect = {i} | ({0} if level >= 1 else set()) | ({5} if level == 2 else set())
        assert set(torch.nonzero(cand[i]).flatten().tolist()) == expect
    assert lay.block[:13, 13:].sum() == 0  # candidates never see masks
    assert lay.rel_pos[:13].tolist() == [0] + [1] * 5 + [2] * 4 + [3] * 3
    g = lay.group_rows(6)  # group of node 6 = (level 1, c 0), which sits at relative position 2
    assert lay.rel_pos[g].tolist() == [3, 4, 5]
    assert set(torch.nonzero(lay.block[g.start, :13]).flatten().tolist()) == {0, 1, 6}
