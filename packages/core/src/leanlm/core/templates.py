"""Prompt templates: the formats the supported models were trained with.

``format_prompt(name, instruction, input=None, system=None, tokenizer=None)`` returns the text
the model sees before its answer; ``format_conversation`` does the same for a multi-turn chat
(earlier answers included). The fixed strings are the models' own published formats
(a model answers well only in the format it was tuned on), so they are reproduced exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leanlm.core.errors import UserError

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
)
ALPACA_INPUT_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Answer as helpfully as possible while staying "
    "safe and accurate. If a question does not make sense or you do not know the answer, say so "
    "instead of making something up."
)


@dataclass(frozen=True)
class Template:
    name: str
    description: str

    def format(
        self, instruction: str, input: str | None = None, system: str | None = None, tokenizer: Any = None
    ) -> str:
        return _FORMATTERS[self.name](instruction, input or "", system, tokenizer)


def _alpaca(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    # system=None: the standard preamble; system="": no preamble at all; otherwise the given text
    if system is None:
        header = ALPACA_INPUT_HEADER if input else ALPACA_HEADER
    else:
        header = system + "\n\n" if system else ""
    if input:
        return f"{header}### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    return f"{header}### Instruction:\n{instruction}\n\n### Response:\n"


def _instruction_response(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    # The bare format Lion and BitDistiller train with: no preamble.
    body = f"{instruction}\n\n{input}" if input else instruction
    return f"### Instruction:\n{body}\n\n### Response:"


def _llama2_chat(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    body = f"{instruction}\n\n{input}" if input else instruction
    sys_text = LLAMA2_SYSTEM if system is None else system
    if sys_text:
        return f"[INST] <<SYS>>\n{sys_text}\n<</SYS>>\n\n{body} [/INST]"
    return f"[INST] {body} [/INST]"


def _vicuna(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    body = f"{instruction}\n\n{input}" if input else instruction
    sys_text = VICUNA_SYSTEM if system is None else system
    return f"{sys_text + ' ' if sys_text else ''}USER: {body} ASSISTANT:"


def _falcon(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    body = f"{instruction}\n\n{input}" if input else instruction
    return f"{system + chr(10) if system else ''}User: {body}\nAssistant:"


def render_chat(messages: list[dict[str, str]], tokenizer: Any, missing: str | None = None) -> str:
    """``messages`` rendered by the tokenizer's chat template, ending with the assistant's turn opened.

    The text carries the template's special tokens (BOS included): encode it with
    ``add_special_tokens=False``. ``missing`` is the error when the tokenizer has no template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UserError(missing or "template 'chat' needs a tokenizer with a chat template; pass tokenizer=")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _chat_template(instruction: str, input: str, system: str | None, tokenizer: Any) -> str:
    body = f"{instruction}\n\n{input}" if input else instruction
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": body}
    ]
    return render_chat(messages, tokenizer)


_FORMATTERS = {
    "alpaca": _alpaca,
    "instruction_response": _instruction_response,
    "llama2_chat": _llama2_chat,
    "vicuna_v1.1": _vicuna,
    "falcon": _falcon,
    "chat": _chat_template,
}

TEMPLATES: dict[str, Template] = {
    "alpaca": Template("alpaca", "Stanford Alpaca, with or without an ### Input section"),
    "instruction_response": Template("instruction_response", "### Instruction / ### Response, no preamble"),
    "llama2_chat": Template("llama2_chat", "LLaMA-2-chat [INST] <<SYS>> format"),
    "vicuna_v1.1": Template("vicuna_v1.1", "Vicuna v1.1 USER:/ASSISTANT: format"),
    "falcon": Template("falcon", "Falcon-instruct User:/Assistant: format"),
    "chat": Template("chat", "the tokenizer's own chat template (apply_chat_template)"),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UserError(f"unknown prompt template {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def format_prompt(
    template: str,
    instruction: str,
    input: str | None = None,
    system: str | None = None,
    tokenizer: Any = None,
) -> str:
    """Render ``instruction`` (and optional ``input``) in the named template, ready for the answer."""
    return get_template(template).format(instruction, input, system, tokenizer)


# How a finished answer closes its turn and the next user message opens one, per string template
# (the conventions of each format: FastChat's separators for Vicuna, </s><s> for LLaMA-2).
_NEXT_TURN = {
    "alpaca": lambda answer, user: f"{answer}\n\n### Instruction:\n{user}\n\n### Response:\n",
    "instruction_response": lambda answer, user: f"\n{answer}\n\n### Instruction:\n{user}\n\n### Response:",
    "llama2_chat": lambda answer, user: f" {answer} </s><s>[INST] {user} [/INST]",
    "vicuna_v1.1": lambda answer, user: f" {answer}</s>USER: {user} ASSISTANT:",
    "falcon": lambda answer, user: f" {answer}\nUser: {user}\nAssistant:",
}


def format_conversation(
    template: str,
    user_turns: list[str],
    answers: list[str],
    system: str | None = None,
    tokenizer: Any = None,
) -> str:
    """The prompt for the answer to ``user_turns[-1]``, after earlier turns and their ``answers``.

    ``len(answers) == len(user_turns) - 1``; answers are stripped. One turn gives
    ``format_prompt(template, user_turns[0], system=system)``.
    """
    get_template(template)
    if not user_turns or len(answers) != len(user_turns) - 1:
        raise UserError(
            f"a conversation needs n user turns and n-1 answers, got {len(user_turns)} and {len(answers)}"
        )
    if template == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        for user, answer in zip(user_turns, [*answers, None], strict=True):
            messages.append({"role": "user", "content": user})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer.strip()})
        return render_chat(messages, tokenizer)
    text = format_prompt(template, user_turns[0], system=system, tokenizer=tokenizer)
    for answer, user in zip(answers, user_turns[1:], strict=True):
        text += _NEXT_TURN[template](answer.strip(), user)
    return text


def _local_tokenizer(model_name: str) -> Any:
    """The model's tokenizer when it is on disk (a folder, a checkpoint, the embedded model, the hub
    cache), else None: choosing a template never downloads anything."""
    from leanlm.core.models import load_tokenizer, resolve_model

    try:
        r = resolve_model(model_name)
        if r.kind in ("local", "checkpoint", "embedded"):
            return load_tokenizer(model_name)
        if r.kind == "hub" and r.status == "yes":
            return load_tokenizer(model_name, local_files_only=True)
    except Exception:  # noqa: BLE001 - no usable local tokenizer: fall back to the name
        return None
    return None


def default_template_for(model_name: str, tokenizer: Any = None) -> str:
    """The template a model expects: ``chat`` whenever its tokenizer has a chat template (Llama-3,
    Qwen, Mistral, Gemma, Phi-3 instruct models all ship one), else chosen by name.

    ``tokenizer``: the model's tokenizer when the caller has it; otherwise it is looked up on disk.
    """
    if tokenizer is None:
        tokenizer = _local_tokenizer(str(model_name))
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return "chat"
    n = str(model_name).lower()
    if "llama2" in n or "llama-2" in n:
        return "llama2_chat"
    if "vicuna" in n:
        return "vicuna_v1.1"
    if "falcon" in n:
        return "falcon"
    if "smollm" in n or n == "default" or "tinyllama" in n:
        return "chat"
    return "alpaca"
