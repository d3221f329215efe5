"""Lion's student training on 2 CPU processes with FSDP: train_student(nproc=2), the path lion-iterate
--nproc takes, runs lion-train under torchrun (no --nproc there: the launcher's WORLD_SIZE is seen);
each rank really holds about half the parameters, and the gathered model saves and loads."""

import re

import pytest
import torch

RECORDS = [
    {"id": f"r{i}", "instruction": f"Repeat the number {i}.", "output": f"{i} {i} {i}"} for i in range(8)
]


@pytest.mark.slow
def test_fsdp_two_processes_shards_the_student(tmp_path, tiny_dir, capfd, monkeypatch):
    from leanlm.core.models import load_model
    from leanlm.lion.train import train_student

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "student"
    metrics = train_student(
        str(tiny_dir),
        RECORDS,
        out,
        nproc=2,
        fsdp=True,
        max_length=32,
        num_train_epochs=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
    )
    err = capfd.readouterr().err
    held = {
        int(r): (int(a), int(b), kind)
        for r, a, b, kind in re.findall(r"rank (\d) of 2 held (\d+) of (\d+) parameter values \((\w+)\)", err)
    }
    assert sorted(held) == [0, 1], err[-3000:]
    total = held[0][1]
    for local, of, kind in held.values():
        assert (
            kind == "FSDP" and of == total and 0.4 * total < local < 0.6 * total
        )  # replicated DDP: local == total
    assert total <= held[0][0] + held[1][0] <= total * 1.05  # the shards cover the model (FSDP pads a little)
    assert metrics["world_size"] == 2 and metrics["train_loss"] > 0
    trained, base = load_model(str(out), device="cpu"), load_model(str(tiny_dir), device="cpu")
    assert sum(p.numel() for p in trained.parameters()) == total  # the full model was gathered for saving
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters()))


def test_trainer_takes_the_shared_training_flags():
    from leanlm.core.training import missing_trainer_flags
    from leanlm.lion import cli

    assert missing_trainer_flags(cli.train) == []
    assert missing_trainer_flags(cli.iterate) == []
