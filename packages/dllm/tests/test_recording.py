"""The forward hook that collects routing decisions from forwards other code runs (core's perplexity)."""

import pytest
import torch

from leanlm.dllm.evaluate import text_perplexity
from leanlm.dllm.recording import record_decisions


@torch.no_grad()
def test_hook_keeps_each_forwards_decisions_and_mask_then_goes(routed):
    ids = torch.randint(0, 2000, (2, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    with record_decisions(routed) as seen:
        outs = [routed(ids, mask), routed(input_ids=ids, attention_mask=mask), routed(ids)]
    masks = [mask, mask, torch.ones_like(ids)]  # no mask given: the forward's all-ones one
    assert len(seen) == 3
    for (execs, kept), out, m in zip(seen, outs, masks):
        assert execs.device.type == "cpu" and torch.equal(execs, out.execs) and torch.equal(kept, m)
    assert (seen[0][0] < 0.5).any()  # the routers skip blocks: not a trivial all-ones record
    routed(ids, mask)
    assert len(seen) == 3 and not routed._forward_hooks  # removed on leaving the block


def test_hook_is_removed_when_the_block_fails(routed):
    with pytest.raises(RuntimeError, match="boom"), record_decisions(routed):
        raise RuntimeError("boom")
    assert not routed._forward_hooks


def test_text_perplexity_weighs_the_decisions_core_perplexity_took(routed, tokenizer):
    from leanlm.core.evaluation.perplexity import token_stream

    texts = ["The quick brown fox jumps over the lazy dog, and the dog sleeps on. " * 6]
    result = text_perplexity(routed, tokenizer, texts, seqlen=16, max_chunks=2)
    chunks = torch.tensor(token_stream(tokenizer, texts, 32)[:32]).view(2, 16)
    with torch.no_grad():
        execs = routed(chunks, torch.ones_like(chunks)).execs
    per_chunk = (execs > 0.5).float().mean(dim=(1, 2))
    assert result["tokens"] == 32 and float(per_chunk.mean()) < 1.0
    assert result["exec_ratio"] == pytest.approx(float(per_chunk.mean()))
    assert not routed._forward_hooks
