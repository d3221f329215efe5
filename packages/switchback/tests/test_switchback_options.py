"""FinetuneOptions, filled from the command line as switchback-finetune fills it (no training here)."""

from __future__ import annotations

from leanlm.core.config_cli import config_command
from leanlm.core.console import run_cli
from leanlm.switchback.options import SWITCHBACK_RECIPE, FinetuneOptions
from leanlm.switchback.surgery import DEFAULT_EXCLUDE, parse_exclude

# the command's own flags and coercion, with a run function that hands back the config it got
parse = config_command(FinetuneOptions, lambda config: config)


def test_exclude_none_keeps_every_layer_and_the_default_keeps_the_seeds():
    assert parse_exclude(run_cli(parse, "switchback-finetune", ["--exclude", "none"]).exclude) == ()
    assert parse_exclude(run_cli(parse, "switchback-finetune", []).exclude) == DEFAULT_EXCLUDE
    got = run_cli(parse, "switchback-finetune", ["--exclude", "lm_head,q_proj"]).exclude
    assert parse_exclude(got) == ("lm_head", "q_proj")


def test_training_flags_override_the_recipe_and_unset_ones_keep_it():
    argv = ["--learning_rate", "2e-5", "--epochs", "1", "--bf16", "true", "--grad_accum", "2"]
    flags = run_cli(parse, "switchback-finetune", argv).train_flags()
    assert (flags.learning_rate, flags.epochs, flags.bf16, flags.grad_accum) == (2e-5, 1.0, True, 2)
    assert flags.batch_size == SWITCHBACK_RECIPE.batch_size == 64
    assert flags.lr_scheduler_type == "constant_with_warmup" and flags.seed == 0
    assert FinetuneOptions().train_flags() == SWITCHBACK_RECIPE
