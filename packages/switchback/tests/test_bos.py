"""SwitchBack's training examples carry exactly one BOS on every architecture's tokenizer style."""

import pytest

from leanlm.core.testing.tiny_models import ARCH_STYLE, ARCHITECTURES, STYLES, tiny_tokenizer
from leanlm.switchback.data import default_template, encode_pair, to_pair


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_chat_prompt_has_one_bos(arch):
    tok = tiny_tokenizer(arch)
    template = default_template(tok)
    assert template == "chat"  # every family's tokenizer has a chat template
    prompt, target = to_pair({"instruction": "Name a colour.", "output": "Blue."}, template, tok)
    ids = encode_pair(tok, prompt, target, source_max_len=256, target_max_len=64)["input_ids"]
    if STYLES[ARCH_STYLE[arch]].bos is None:
        want = tok(prompt, add_special_tokens=False)["input_ids"]  # nothing added to the text's own tokens
        assert ids[: len(want)] == want
    else:
        assert prompt.startswith(tok.bos_token)  # the template rendered it: the tokenizer must not add one
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
