"""FSDP wraps each architecture's own decoder layer: the class comes from the model, and the
accelerate plugin the Trainer builds from the arguments turns it into the wrap policy (CPU)."""

import pytest
from torch import nn

from leanlm.core.errors import UserError
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_model
from leanlm.core.training import decoder_layer_classes, training_arguments


def _policy_classes(args, model):
    """What accelerate's FSDP plugin (built as the Trainer builds it) will wrap in ``model``."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    plugin.set_auto_wrap_policy(model)
    return plugin.auto_wrap_policy.keywords["transformer_layer_cls"]


@pytest.fixture(scope="module")
def models():
    return {arch: tiny_model(arch, num_layers=2) for arch in ARCHITECTURES}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_wrap_policy_is_the_models_decoder_layer(models, arch, tmp_path):
    model = models[arch]
    layer_cls = type(model.model.layers[0])
    assert decoder_layer_classes(model) == [layer_cls.__name__]
    args = training_arguments(tmp_path, {}, fsdp=True, model=model)
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == [layer_cls.__name__]
    assert _policy_classes(args, model) == {layer_cls}
    # without a model the class is left to accelerate, which derives the same one at wrap time
    bare = training_arguments(tmp_path, {}, fsdp=True)
    assert "transformer_layer_cls_to_wrap" not in bare.fsdp_config
    assert _policy_classes(bare, model) == {layer_cls}


class _MethodWrapper(nn.Module):
    """What peft and the methods do: the HF model a few attributes down (peft itself is not a core dependency)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.base_model = nn.ModuleDict({"model": model})


def test_wrap_class_found_through_wrappers_and_refused_without_one(models):
    wrapped = _MethodWrapper(_MethodWrapper(models["qwen3"]))
    assert decoder_layer_classes(wrapped) == ["Qwen3DecoderLayer"]
    with pytest.raises(UserError, match="_no_split_modules"):
        decoder_layer_classes(nn.Sequential(nn.Linear(2, 2)))
