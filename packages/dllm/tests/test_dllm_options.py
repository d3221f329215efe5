"""The console scripts' option classes: defaults come from the recipe, values reach the library typed."""

import dataclasses

import pytest

from leanlm.core.errors import UserError
from leanlm.dllm import DLLMConfig, cli
from leanlm.dllm.options import EvalOptions, FinetuneOptions
from leanlm.dllm.train import DLLM_RECIPE


def test_finetune_defaults_are_the_recipe_and_the_default_config():
    options = FinetuneOptions(data="piqa")
    assert options.train_flags() == DLLM_RECIPE
    assert options.dllm_config() == DLLMConfig()


def test_finetune_flags_reach_the_train_flags_and_the_config():
    given = {"model": "m", "dense": True, "target": 0.3, "lora_rank": 4, "start_layer": 1}
    options = FinetuneOptions("piqa", **given, learning_rate=1e-3, epochs=2.0, seed=3, resume=False)
    flags = options.train_flags()
    assert (flags.learning_rate, flags.epochs, flags.seed, flags.resume) == (1e-3, 2.0, 3, False)
    assert flags.lr_scheduler_type == "cosine" and flags.save_steps == 200  # the rest stays the recipe's
    want = DLLMConfig(target=0.3, lora_rank=4, start_layer=1, dynamic=False, base_model="m")
    assert options.dllm_config() == want
    with pytest.raises(UserError, match="target"):
        dataclasses.replace(options, target=1.5).dllm_config()


def test_commands_are_built_from_the_option_classes():
    assert cli.finetune._config is FinetuneOptions and cli.evaluate._config is EvalOptions
    with pytest.raises(UserError, match="--metric must be auto, accuracy or perplexity"):
        EvalOptions(metric="bleu")
