import copy

import pytest

pytest_plugins = ["leanlm.core.testing.fixtures"]


@pytest.fixture(scope="session")
def tiny_bita(tiny_model):
    """An untrained (initialised) adapter on a private copy of tiny_llama, M=3, P=4, no dropout."""
    from leanlm.bita.model import BiTAConfig, BiTAModel

    return BiTAModel(
        copy.deepcopy(tiny_model), BiTAConfig(num_masks=3, num_prefix=4, prefix_dropout=0.0)
    ).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tokenizer, tmp_path_factory):
    """tiny_llama saved as an HF folder, so console scripts can load it with --model PATH."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
