"""Launching, ranks and seeding.

A console script calls ``maybe_launch(nproc)`` first: with ``--nproc N`` (N > 1) and not already
inside a distributed job, it re-executes itself under ``torchrun --standalone --nproc_per_node N``
(or the ``deepspeed`` launcher) and exits with the launcher's code. Inside the job ``WORLD_SIZE``/
``RANK`` are set and HF Trainer picks them up.

``--nproc`` is the one-machine shortcut. For several machines (or any launcher of your own), run
the same command under the launcher without ``--nproc``: a process that already has ``WORLD_SIZE``
(torchrun, ``accelerate launch``, ``deepspeed``, or torchrun inside a SLURM ``srun``) never relaunches::

    torchrun --nnodes 2 --node_rank $RANK --master_addr HOST --master_port 29500 \
        --nproc_per_node 8 $(which lion-train) data.jsonl runs/student
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from leanlm.core.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def in_distributed_job() -> bool:
    """Whether a launcher (torchrun, accelerate, deepspeed) started this process as one rank of a job."""
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def release_process_group() -> None:
    """Destroy the default process group if this process has one, before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads are destroyed while still joinable and a rank
    can abort ("terminate called without an active exception", SIGABRT) after its work is saved."""
    dist = sys.modules.get("torch.distributed")  # never imported: no group, and no torch import at exit
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def launch_command(nproc: int, argv: Sequence[str], launcher: str = "torchrun") -> list[str]:
    """The command that runs ``argv`` (a script and its args) on ``nproc`` local processes."""
    if launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *argv,
        ]
    if launcher == "deepspeed":
        exe = shutil.which("deepspeed")
        if exe is None:
            raise UserError("the deepspeed launcher is not installed; use --launcher torchrun")
        return [exe, f"--num_gpus={nproc}", *argv]
    raise UserError(f"unknown launcher {launcher!r}; use torchrun or deepspeed")


def maybe_launch(nproc: int | None, launcher: str = "torchrun", argv: Sequence[str] | None = None) -> None:
    """Re-execute this command on ``nproc`` processes unless already distributed; never returns then."""
    if not nproc or int(nproc) <= 1 or in_distributed_job():
        return
    args = list(argv if argv is not None else sys.argv)
    args = _drop_flag(args, "--nproc")
    env = dict(os.environ, LEANLM_LAUNCHED="1")
    code = subprocess.call(launch_command(int(nproc), args, launcher), env=env)
    raise SystemExit(code)


def _drop_flag(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == flag:
            skip = i + 1 < len(argv)
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out
