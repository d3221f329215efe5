"""A killed training run resumes from its last checkpoint and ends where an uninterrupted run ends."""

import copy
import shutil

import torch
from safetensors.torch import load_file

from leanlm.bita.model import ADAPTER_FILE, BiTAConfig, BiTAModel
from leanlm.bita.train import train_adapter

RECORDS = [
    {
        "prompt": f"Question {i}: what is {i} plus {i}?",
        "output": f"The answer is {2 * i}, since {i} + {i} = {2 * i}.",
    }
    for i in range(6)
]
ARGS = dict(
    max_groups=4,
    cutoff=64,
    resample=1,
    max_steps=4,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    learning_rate=1e-2,
    save_steps=2,
    save_total_limit=10,
    logging_steps=1,
)


def _run(tiny_model, tokenizer, folder):
    bita = BiTAModel(copy.deepcopy(tiny_model), BiTAConfig(num_masks=2, num_prefix=2, prefix_dropout=0.1))
    train_adapter(bita, tokenizer, RECORDS, folder, **ARGS)
    return load_file(str(folder / ADAPTER_FILE))


def test_killed_run_resumes_to_the_same_adapter(tiny_model, tokenizer, tmp_path, caplog):
    whole = _run(tiny_model, tokenizer, tmp_path / "whole")
    cut = tmp_path / "cut"
    first = _run(tiny_model, tokenizer, cut)
    assert all(torch.equal(first[k], whole[k]) for k in whole)  # deterministic to begin with
    # a kill after checkpoint-2 was written: the later checkpoint and the final adapter are gone
    shutil.rmtree(cut / "checkpoint-4")
    (cut / ADAPTER_FILE).unlink()
    caplog.set_level("INFO")
    resumed = _run(tiny_model, tokenizer, cut)
    assert "resuming from" in caplog.text and "checkpoint-2" in caplog.text
    init = BiTAModel(copy.deepcopy(tiny_model), BiTAConfig(num_masks=2, num_prefix=2)).adapter_state()
    for k in whole:
        assert not torch.equal(whole[k], init[k])  # training moved the adapter
        torch.testing.assert_close(resumed[k], whole[k], rtol=1e-5, atol=1e-6)
