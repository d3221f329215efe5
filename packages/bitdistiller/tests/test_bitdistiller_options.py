"""The commands are their configs: flags in the same positional order, typed values, the recipe through TrainFlags."""

from __future__ import annotations

import inspect

import pytest

from leanlm.bitdistiller import cli
from leanlm.bitdistiller.options import BITDISTILLER_RECIPE, GenerateOptions, TrainOptions
from leanlm.core.console import run_cli

TRAIN_FLAGS = [
    "data",
    "output_dir",
    "model",
    "clip",
    "quant_type",
    "w_bit",
    "group_size",
    "loss",
    "gamma",
    "gamma_batches",
    "max_length",
    "eval_fraction",
    "mask_prompt",
    "max_samples",
    "dtype",
    "learning_rate",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_steps",
    "save_steps",
    "logging_steps",
    "gradient_checkpointing",
    "seed",
    "report_to",
    "deepspeed",
    "nproc",
    "resume",
]


def test_train_flags_keep_their_order_and_defaults():
    params = inspect.signature(cli.train).parameters
    assert list(params) == TRAIN_FLAGS
    assert params["data"].default is inspect.Parameter.empty and params["resume"].default is True
    assert params["loss"].default == "cakld" and params["max_length"].default == 1024
    assert "    mask_prompt: distil over the response only" in cli.train.__doc__


def test_export_and_generate_take_the_shared_output_names():
    assert list(inspect.signature(cli.export).parameters)[:2] == ["model", "output_dir"]
    generate = inspect.signature(cli.generate).parameters
    assert generate["output"].default is None and generate["output_dir"].default == "."
    assert "out" not in generate and "out_dir" not in generate
    assert "output" in inspect.signature(cli.mix).parameters


@pytest.mark.parametrize(
    "command, name, old, new",
    [
        (cli.generate, "bitdistiller-generate", "out", "output"),
        (cli.generate, "bitdistiller-generate", "out_dir", "output_dir"),
        (cli.mix, "bitdistiller-mix", "out", "output"),
        (cli.export, "bitdistiller-export", "out_dir", "output_dir"),
    ],
)
def test_the_old_output_flags_are_refused(command, name, old, new, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(command, name, [f"--{old}", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"unknown flag --{old}; did you mean --{new}?" in err


def test_unset_training_flags_keep_the_papers_recipe():
    flags = TrainOptions("d.jsonl", "run", learning_rate=1e-4, max_steps=3, resume=False).train_flags()
    assert (flags.learning_rate, flags.max_steps, flags.resume) == (1e-4, 3, False)
    assert (flags.batch_size, flags.grad_accum, flags.epochs) == (16, 8, 4)
    assert flags.lr_scheduler_type == BITDISTILLER_RECIPE.lr_scheduler_type == "constant"


def test_command_line_strings_arrive_typed():
    seen = {}

    def capture(config):
        seen["config"] = config
        return "ok"

    from leanlm.core.config_cli import config_command

    command = config_command(TrainOptions, capture)
    run_cli(command, "bitdistiller-train", ["d.jsonl", "run", "--mask_prompt", "true", "--w_bit", "3.0"])
    config = seen["config"]
    assert config.mask_prompt is True and config.w_bit == 3 and type(config.w_bit) is int


def test_a_served_default_model_asks_the_server():
    spec = GenerateOptions(backend="openai", base_url="http://x/v1").backend_spec()
    assert spec.model is None and spec.backend == "openai"
    assert GenerateOptions(model="m", batch_size=3).backend_spec().batch_size == 3
