"""TrainFlags: the one mapping from the trainers' short flags to TrainingArguments, its checks
(--report_to, --deepspeed on CPU, booleans fire leaves as strings), and launching inside a job."""

import importlib.util
import os
import subprocess

import pytest

from leanlm.core.distributed import maybe_launch
from leanlm.core.errors import UserError
from leanlm.core.flags import check_flag_values
from leanlm.core.training import TrainFlags

TENSORBOARD = any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))


def test_flags_map_to_training_arguments_in_order(tmp_path):
    recipe = TrainFlags(
        epochs=4,
        batch_size=16,
        grad_accum=8,
        learning_rate=8e-6,
        lr_scheduler_type="constant",
        warmup_ratio=0.05,
        save_steps=50,
        seed=42,
    )
    flags = recipe.override(learning_rate=1e-4, epochs=None, grad_accum=1)
    args = flags.to_training_arguments(
        tmp_path, overrides={"max_steps": 3, "seed": None}, adam_beta2=0.95, save_steps=7, learning_rate=1.0
    )
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        4,
        16,
        1,
    )
    assert args.learning_rate == 1e-4  # the flag beats the method's constant, the override the flag
    assert args.save_steps == 50 and args.adam_beta2 == 0.95 and args.max_steps == 3 and args.seed == 42
    assert args.lr_scheduler_type == "constant" and args.warmup_steps == 0.05
    assert args.report_to == [] and args.use_cpu  # no tracker unless asked; CPU here
    assert recipe.learning_rate == 8e-6  # override returns a copy


def test_override_names_an_unknown_flag():
    with pytest.raises(UserError, match="did you mean 'learning_rate'"):
        TrainFlags().override(learning_rat=1.0)


def test_booleans_fire_leaves_as_strings_are_parsed_or_refused():
    flags = TrainFlags(fsdp="true", resume="false", bf16="no")
    assert (flags.fsdp, flags.resume, flags.bf16) == (True, False, False)
    with pytest.raises(UserError, match="--resume must be true or false"):
        TrainFlags(resume="maybe")


def test_to_argv_lists_what_differs_from_the_recipe():
    recipe = TrainFlags(epochs=3, learning_rate=2e-5, save_total_limit=1)
    argv = recipe.override(epochs=1, fsdp=True).to_argv(base=recipe)
    assert argv == ["--epochs", "1", "--fsdp", "true"]  # the recipe's own values are left to the recipe
    assert TrainFlags(seed=0, resume=False).to_argv() == [
        "--seed",
        "0",
        "--fsdp",
        "false",
        "--resume",
        "false",
    ]


@pytest.mark.parametrize("value", ["tb", "none,wandb", "", "tensorboard,mlflow"])
def test_report_to_unknown_value_is_refused_up_front(value):
    with pytest.raises(UserError, match="--report_to must be none, tensorboard, wandb"):
        check_flag_values(["--report_to", value])
    check_flag_values(["--report_to", "tensorboard,wandb"])  # a known list passes the rule


def test_report_to_tensorboard_writes_events_or_says_it_is_missing(tmp_path):
    if not TENSORBOARD:  # not in the locked test environment: the clear one-line refusal instead
        with pytest.raises(
            UserError, match=r"--report_to tensorboard: the tensorboard package is not installed"
        ):
            TrainFlags(report_to="tensorboard")
        return
    from transformers import Trainer

    from leanlm.core.models import load_tokenizer
    from leanlm.core.sft import PaddingCollator, tokenize_example
    from leanlm.core.testing.tiny_models import tiny_llama

    tok = load_tokenizer("default")
    data = [tokenize_example(tok, f"Q{i}", f" {i}", max_length=16) for i in range(4)]
    flags = TrainFlags(report_to="tensorboard", max_steps=2, batch_size=2, logging_steps=1)
    args = flags.to_training_arguments(tmp_path, save_strategy="no", disable_tqdm=True)
    model = tiny_llama(num_layers=1, hidden_size=16, num_heads=2, num_kv_heads=1, intermediate_size=32)
    Trainer(
        model=model, args=args, train_dataset=data, data_collator=PaddingCollator(tok.pad_token_id)
    ).train()
    assert list(tmp_path.glob("runs/*/events.out.tfevents.*"))


def test_report_to_none_is_the_default(tmp_path):
    assert TrainFlags(report_to="none").to_training_arguments(tmp_path).report_to == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for CPU-only machines")
def test_deepspeed_on_cpu_is_refused_in_one_line():
    # accelerate starts DeepSpeed only on accelerators: on CPU the job would silently run plain DDP
    with pytest.raises(UserError, match="DeepSpeed runs only on CUDA GPUs"):
        TrainFlags(deepspeed="zero2")


def test_inside_a_launched_job_nproc_does_not_relaunch(monkeypatch):
    def no_launch(*a, **k):
        raise AssertionError("relaunched inside a distributed job")

    monkeypatch.setattr(subprocess, "call", no_launch)
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")  # e.g. torchrun --nnodes 2 on another node, or srun + torchrun
    maybe_launch(2)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SystemExit) as e:  # outside a job it does relaunch (here: a launcher that exits 3)
        monkeypatch.setattr(subprocess, "call", lambda cmd, env: 3 if "--nproc_per_node=2" in cmd else 0)
        maybe_launch(2, argv=["script.py", "--nproc", "2"])
    assert e.value.code == 3 and "LOCAL_RANK" not in os.environ
