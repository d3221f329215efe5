import pytest

from leanlm.core.errors import UserError
from leanlm.core.templates import TEMPLATES, default_template_for, format_conversation, format_prompt
from leanlm.core.testing.tiny_models import ARCHITECTURES, tiny_tokenizer


def test_alpaca_with_and_without_input():
    no_input = format_prompt("alpaca", "Name a colour.")
    assert no_input.endswith("### Instruction:\nName a colour.\n\n### Response:\n")
    assert "### Input" not in no_input and no_input.startswith("Below is an instruction")
    with_input = format_prompt("alpaca", "Translate.", input="bonjour")
    assert "paired with an input" in with_input
    assert with_input.endswith("### Instruction:\nTranslate.\n\n### Input:\nbonjour\n\n### Response:\n")


def test_alpaca_system_override_and_empty():
    assert format_prompt("alpaca", "Hi", system="") == "### Instruction:\nHi\n\n### Response:\n"
    assert format_prompt("alpaca", "Hi", system="Be terse.").startswith("Be terse.\n\n### Instruction:")


def test_instruction_response():
    assert (
        format_prompt("instruction_response", "Add 2 and 3.")
        == "### Instruction:\nAdd 2 and 3.\n\n### Response:"
    )


def test_llama2_chat():
    p = format_prompt("llama2_chat", "Hi", system="Be brief.")
    assert p == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    assert format_prompt("llama2_chat", "Hi", system="") == "[INST] Hi [/INST]"
    assert "<<SYS>>" in format_prompt("llama2_chat", "Hi")


def test_vicuna_and_falcon():
    v = format_prompt("vicuna_v1.1", "Hi")
    assert v.startswith("A chat between") and v.endswith("USER: Hi ASSISTANT:")
    assert format_prompt("falcon", "Hi") == "User: Hi\nAssistant:"


def test_tokenizer_chat_template(tokenizer):
    p = format_prompt("chat", "What is 2+2?", tokenizer=tokenizer)
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in p
    assert p.rstrip().endswith("<|im_start|>assistant")
    with pytest.raises(UserError, match="needs a tokenizer"):
        format_prompt("chat", "x")


def test_every_template_renders_a_sample(tokenizer):
    for name in TEMPLATES:
        text = format_prompt(name, "Say hello.", input="to Bob", tokenizer=tokenizer)
        assert "Say hello." in text and "to Bob" in text


def test_unknown_template():
    with pytest.raises(UserError, match="unknown prompt template 'nope'"):
        format_prompt("nope", "x")


def test_default_template_for():
    assert default_template_for("llama2-7b-chat") == "llama2_chat"
    assert default_template_for("vicuna-13b") == "vicuna_v1.1"
    assert default_template_for("default") == "chat"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_default_template_is_the_tokenizers_chat_template(arch, tmp_path):
    """Llama-3, Qwen, Mistral, Gemma, Phi-3 folders ship a chat template: it is chosen, not alpaca."""
    tok = tiny_tokenizer(arch)
    folder = tmp_path / f"my-{arch}-instruct"
    tok.save_pretrained(folder)
    assert default_template_for(str(folder)) == "chat"
    assert default_template_for("some-unknown-model", tokenizer=tok) == "chat"


def test_default_template_without_chat_template_falls_back_to_the_name(tmp_path, tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    plain.save_pretrained(tmp_path / "my-model")
    assert default_template_for(str(tmp_path / "my-model")) == "alpaca"
    assert default_template_for("vicuna-7b", tokenizer=plain) == "vicuna_v1.1"


def test_conversation_one_turn_equals_format_prompt(tokenizer):
    for name in TEMPLATES:
        one = format_conversation(name, ["Say hello."], [], tokenizer=tokenizer)
        assert one == format_prompt(name, "Say hello.", tokenizer=tokenizer)


def test_conversation_second_turn():
    assert (
        format_conversation("vicuna_v1.1", ["Hi", "And then?"], [" Hello! "], system="")
        == "USER: Hi ASSISTANT: Hello!</s>USER: And then? ASSISTANT:"
    )
    assert (
        format_conversation("llama2_chat", ["Hi", "More"], ["Hello"], system="")
        == "[INST] Hi [/INST] Hello </s><s>[INST] More [/INST]"
    )
    assert format_conversation("alpaca", ["A", "B"], ["x"], system="") == (
        "### Instruction:\nA\n\n### Response:\nx\n\n### Instruction:\nB\n\n### Response:\n"
    )
    assert format_conversation("falcon", ["A", "B"], ["x"]) == "User: A\nAssistant: x\nUser: B\nAssistant:"


def test_conversation_chat_template(tokenizer):
    text = format_conversation("chat", ["What is 2+2?", "Times 3?"], ["4"], tokenizer=tokenizer)
    first = text.index("<|im_start|>user\nWhat is 2+2?<|im_end|>")
    answer = text.index("<|im_start|>assistant\n4<|im_end|>")
    second = text.index("<|im_start|>user\nTimes 3?<|im_end|>")
    assert first < answer < second and text.rstrip().endswith("<|im_start|>assistant")


def test_conversation_bad_turns():
    with pytest.raises(UserError, match="n user turns and n-1 answers"):
        format_conversation("alpaca", ["A", "B"], [])
    with pytest.raises(UserError, match="unknown prompt template"):
        format_conversation("nope", ["A"], [])
