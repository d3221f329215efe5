"""Tiny random models of the architectures users run, for every package's tests (no hub).

``tiny_model(arch)`` builds a small randomly initialised causal LM of one of ``ARCHITECTURES``
(4 layers, hidden 64, 4 query / 2 key-value heads, head dim 16) with the architecture's own
quirks switched on: Qwen2 q/k/v biases, Qwen3 q/k norms, Mistral and Gemma2 sliding windows,
Gemma's scaled embeddings and (1 + w) norms, Gemma2's extra norms and logit soft-capping,
Phi-3's fused ``qkv_proj``/``gate_up_proj`` and Llama-3's rope scaling.

``tiny_tokenizer(arch)`` gives each a tokenizer in its family's style, built locally from the
embedded SmolLM2 tokenizer: Qwen keeps ChatML without a BOS (like Qwen's own), while the
Llama/Llama-3/Mistral/Gemma/Phi-3 styles *add* a BOS token when encoding and their chat
templates also render it, which is what exposes double-BOS bugs. ``tiny_model_dir(arch, folder)``
saves model and tokenizer as an HF folder that ``load_model``/``load_tokenizer`` open.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanlm.core.errors import UserError

ARCHITECTURES: tuple[str, ...] = ("llama", "llama3", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")
SLIDING_WINDOW = 4  # short enough that the tests' sequences of ~10 tokens cross it


@dataclass(frozen=True)
class TokenizerStyle:
    """How a family's tokenizer frames text: the BOS it adds (None: none) and its chat template."""

    bos: str | None
    eos: str
    specials: tuple[str, ...] = ()
    chat_template: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


# Chat templates written for these tests in each family's published turn format.
_LLAMA2_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n<</SYS>>\n\n"
    "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)
_LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_GEMMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_PHI3_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

STYLES: dict[str, TokenizerStyle] = {
    "llama2": TokenizerStyle("<s>", "</s>", ("<s>", "</s>"), _LLAMA2_CHAT),
    "llama3": TokenizerStyle(
        "<|begin_of_text|>",
        "<|eot_id|>",
        ("<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
        _LLAMA3_CHAT,
    ),
    "gemma": TokenizerStyle(
        "<bos>", "<eos>", ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), _GEMMA_CHAT
    ),
    "phi3": TokenizerStyle(
        "<s>", "<|end|>", ("<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"), _PHI3_CHAT
    ),
    "chatml": TokenizerStyle(None, "<|im_end|>"),  # the embedded tokenizer as it is (Qwen's style)
}
ARCH_STYLE = {
    "llama": "llama2",
    "llama3": "llama3",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "mistral": "llama2",
    "gemma": "gemma",
    "gemma2": "gemma",
    "phi3": "phi3",
}


def check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown tiny architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return arch


@functools.cache
def tiny_tokenizer(arch: str = "llama") -> Any:
    """The tokenizer of ``arch``'s family (shared: do not mutate). BOS-adding styles encode
    ``"hi"`` as ``[bos, ...]`` and their chat templates start with the BOS text too."""
    from leanlm.core.models import load_tokenizer

    style = STYLES[ARCH_STYLE[check_arch(arch)]]
    base = load_tokenizer("default")
    if style.bos is None:
        return base
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(base.backend_tokenizer.to_str())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in style.specials])
    bos_id = backend.token_to_id(style.bos)
    add_bos = processors.TemplateProcessing(
        single=f"{style.bos} $A",
        pair=f"{style.bos} $A {style.bos} $B:1",
        special_tokens=[(style.bos, bos_id)],
    )
    old = backend.post_processor
    backend.post_processor = add_bos if old is None else processors.Sequence([old, add_bos])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=style.bos,
        eos_token=style.eos,
        pad_token=style.eos,
        chat_template=style.chat_template,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids: generate() rejects them
    )


def _config(arch: str, tok: Any, num_layers: int, tie_word_embeddings: bool) -> Any:
    import transformers as tf

    common: dict[str, Any] = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "llama3":
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
        return tf.LlamaConfig(**common, rope_parameters=rope)
    if arch == "qwen2":
        # sliding window on the upper half of the layers, as Qwen2's max_window_layers does
        return tf.Qwen2Config(
            **common,
            use_sliding_window=True,
            sliding_window=SLIDING_WINDOW,
            max_window_layers=num_layers // 2,
        )
    if arch == "qwen3":
        return tf.Qwen3Config(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common, sliding_window=SLIDING_WINDOW)
    if arch == "gemma":
        return tf.GemmaConfig(**common, hidden_activation="gelu_pytorch_tanh")
    if arch == "gemma2":
        return tf.Gemma2Config(
            **common,
            sliding_window=SLIDING_WINDOW,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    common.pop("head_dim")  # Phi-3 derives it from hidden_size / heads (16 here)
    return tf.Phi3Config(**common, sliding_window=SLIDING_WINDOW)


def tiny_model(
    arch: str = "llama", *, num_layers: int = 4, seed: int = 0, tie_word_embeddings: bool = False
) -> Any:
    """A random ``<Arch>ForCausalLM`` (eval mode) over ``tiny_tokenizer(arch)``'s vocabulary.

    Untied head by default: a tied random model tends to predict its input token back. Gemma2
    loads with eager attention (its HF default: SDPA cannot soft-cap attention logits).
    """
    import torch
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer(check_arch(arch))
    config = _config(arch, tok, num_layers, tie_word_embeddings)
    if arch == "gemma2":
        config._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


def tiny_model_dir(arch: str, folder: str | Path, **kwargs: Any) -> Path:
    """Save ``tiny_model(arch, **kwargs)`` and its tokenizer as an HF folder; returns ``folder``."""
    folder = Path(folder)
    tiny_model(arch, **kwargs).save_pretrained(folder)
    tiny_tokenizer(arch).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- "Supported models" tables

ARCH_LABELS = {
    "llama": "Llama (LLaMA-2, TinyLlama, SmolLM2)",
    "llama3": "Llama-3",
    "qwen2": "Qwen2 / Qwen2.5",
    "qwen3": "Qwen3",
    "mistral": "Mistral",
    "gemma": "Gemma",
    "gemma2": "Gemma-2",
    "phi3": "Phi-3",
}


def _arch_of(item: Any) -> str | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    found = [v for v in params.values() if isinstance(v, str) and v in ARCHITECTURES]
    return found[0] if found else None


def supported_models_table(pytest_args: list[str]) -> str:
    """Run tests (``pytest_args``) and tabulate them per architecture: a Markdown table with one row
    per architecture and one column per test function parametrized over it (pass / FAIL / skip;
    "-" where a test does not cover that architecture). READMEs paste its output."""
    import pytest

    results: dict[tuple[str, str], str] = {}
    columns: list[str] = []

    class Collect:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(self, item: Any, call: Any) -> Any:
            outcome = yield
            report = outcome.get_result()
            arch = _arch_of(item)
            if arch is None or (report.when != "call" and report.passed):
                return
            name = item.originalname.removeprefix("test_").replace("_", " ")
            if name not in columns:
                columns.append(name)
            state = "pass" if report.passed else "skip" if report.skipped else "FAIL"
            old = results.get((arch, name), "pass")
            results[(arch, name)] = state if old == "pass" else old  # any failing case marks the cell

    code = pytest.main(["-q", "-p", "no:cacheprovider", *pytest_args], plugins=[Collect()])
    if code not in (0, 1):
        raise UserError(f"pytest exited with code {code} for {pytest_args}")
    lines = ["| architecture | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for arch in ARCHITECTURES:
        cells = [results.get((arch, c), "-") for c in columns]
        lines.append(f"| {ARCH_LABELS[arch]} (`{arch}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tiny_llama(
    *,
    num_layers: int = 4,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int | None = None,
    seed: int = 0,
    tie_word_embeddings: bool = True,
) -> Any:
    """A randomly initialised small ``LlamaForCausalLM`` (GQA) sharing the embedded model's tokenizer.

    For fast unit tests: ~3.5M parameters with the default sizes, deterministic for a given seed.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from leanlm.core.models import load_tokenizer

    tok = load_tokenizer("default")
    config = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
        rope_theta=10000.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


if __name__ == "__main__":  # python -m leanlm.core.testing.tiny_models <pytest args...>: print the table
    import sys

    table = supported_models_table(sys.argv[1:])
    print("\n" + table)
