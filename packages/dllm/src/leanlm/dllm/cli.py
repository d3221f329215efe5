"""Console scripts: dllm-finetune, dllm-chat, dllm-eval (fire; ``--help`` on each)."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

from leanlm.core.console import entry, parse_bool
from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.dllm")

DEFAULT_INSTRUCTS = [
    "Name three ways to save energy at home.",
    "Explain in two sentences what a transformer layer does.",
    "Write a short haiku about autumn rain.",
]


def finetune(
    data: str,
    model: str = "default",
    output: str = "runs/dllm",
    template: str | None = None,
    choice_format: str = "number",
    target: float = 0.5,
    lambda_max: float = 5.0,
    lambda_ramp: float = 1.0,
    ratio_scope: str = "token",
    start_layer: int = 2,
    reserve_initials: int = 2,
    router_hidden: int | None = None,
    lora_rank: int = 8,
    blr: float = 9e-3,
    router_lr: float | None = None,
    router_schedule: str = "cosine",
    max_seq_len: int = 512,
    limit: int | None = None,
    test_size: int = 200,
    dense: bool = False,
    dtype: str | None = None,
    learning_rate: float | None = None,
    epochs: float = 10.0,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_steps: int = -1,
    warmup_ratio: float = 0.2,
    weight_decay: float = 0.02,
    save_steps: int = 200,
    logging_steps: int = 10,
    seed: int = 0,
    report_to: str | None = None,
    deepspeed: str | None = None,
    nproc: int | None = None,
    resume: bool = True,
) -> None:
    """Fine-tune routers + LoRA (q/k/v) on DATA and save them to OUTPUT/dllm.

    DATA: a folder with {train,test,prompt}.json (alpaca or piqa template), a .json/.jsonl alpaca file,
    or an offline task: piqa, boolq, social_i_qa, openbookqa, gsm8k, mmlu. ``--nproc N`` relaunches
    under torchrun (or run the command under torchrun yourself, several nodes too); ``--deepspeed zero2``
    picks a ZeRO preset (CUDA); ``--report_to tensorboard|wandb|none``. ``--learning_rate`` defaults to
    blr * batch_size * grad_accum / 256. ``--dense`` trains LoRA only (baseline).
    ``--router_schedule constant`` keeps the routers' LR constant after the warm-up (LoRA still decays).
    ``--lambda_ramp 0.5`` reaches lambda_max halfway through training (the original: 1.0, at the end).
    ``--choice_format text`` trains a choice task on the right option's text instead of its number.
    ``--ratio_scope batch`` pulls only the batch's mean execution ratio to the target (the original pulls
    every token's).
    """
    from leanlm.core.distributed import is_main_process, maybe_launch, set_seed, world_size
    from leanlm.core.models import load_model, load_tokenizer
    from leanlm.dllm.config import DLLMConfig
    from leanlm.dllm.data import load_examples, tokenize
    from leanlm.dllm.model import DLLM, check_supported_name
    from leanlm.dllm.train import DLLM_RECIPE
    from leanlm.dllm.train import finetune as run_finetune

    flags = DLLM_RECIPE.override(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
                                 grad_accum=grad_accum, max_steps=max_steps, warmup_ratio=warmup_ratio,
                                 weight_decay=weight_decay, save_steps=save_steps, logging_steps=logging_steps,
                                 seed=seed, report_to=report_to, deepspeed=deepspeed, resume=resume)  # fmt: skip
    config = DLLMConfig(start_layer=start_layer, reserve_initials=reserve_initials, target=target,
                        lambda_max=lambda_max, lambda_ramp=lambda_ramp, ratio_scope=ratio_scope, router_hidden=router_hidden, lora_rank=lora_rank,
                        dynamic=not parse_bool(dense, "--dense"), base_model=model).validate()  # fmt: skip
    check_supported_name(model)  # before data, launch and weights
    examples = load_examples(data, "train", template=template, limit=limit, test_size=test_size, seed=seed,
                             choice_format=choice_format)  # fmt: skip
    maybe_launch(nproc)
    set_seed(seed)
    tokenizer = load_tokenizer(model)
    dllm = DLLM(load_model(model, dtype=dtype), config)
    features = tokenize(tokenizer, examples, max_seq_len)
    log.info("training on %d examples from %s", len(features), data)
    summary = run_finetune(dllm, tokenizer, features, output, flags, blr=blr, router_lr=router_lr,
                           router_schedule=router_schedule)  # fmt: skip
    summary.pop("history", None)
    if not is_main_process():  # every rank holds the same routers + LoRA (DDP): rank 0 writes them
        return
    folder = dllm.save(Path(output) / "dllm")
    print(json.dumps({"saved": str(folder), "world_size": world_size(), **summary}, indent=2))


def _instructs(value: Any) -> list[str]:
    if value is None or value == "":
        return list(DEFAULT_INSTRUCTS)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip().startswith("[") else [value]
        except (ValueError, SyntaxError):
            raise UserError(
                f"--instructs must be a Python list of strings, e.g. \"['a', 'b']\"; got {value!r}"
            ) from None
    if isinstance(value, str | int | float):
        value = [str(value)]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UserError("--instructs must be a list of strings")
    return list(value)


def _load(dllm: str | None, model: str | None, dtype: str | None) -> Any:
    from leanlm.dllm.config import DLLMConfig
    from leanlm.dllm.model import DLLM

    if dllm:
        return DLLM.load(dllm, model, dtype=dtype)
    from leanlm.core.models import load_model

    return DLLM(load_model(model or "default", dtype=dtype), DLLMConfig(dynamic=False, lora_rank=0)).eval()


def chat(
    dllm: str | None = "runs/dllm/dllm",
    instructs: Any = None,
    model: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.1,
    top_p: float = 0.75,
    seed: int = 0,
    dtype: str | None = None,
) -> None:
    """Answer INSTRUCTS (a list, "['...', '...']") with the alpaca template; defaults when none are given.

    Prints each answer and its compute: executed-layer ratio, FLOPs ratio against the dense model
    (router cost included) and KV-entries ratio. ``--dllm ''`` runs the plain base model.
    """
    from leanlm.core.models import load_tokenizer
    from leanlm.core.sft import PaddingCollator, encode_prompt
    from leanlm.core.templates import format_prompt
    from leanlm.dllm.decode import generate

    questions = _instructs(instructs)
    net = _load(dllm, model, dtype)
    tokenizer = load_tokenizer(model or net.config.base_model)
    prompts = [format_prompt("alpaca", q) for q in questions]
    feats = [
        {"input_ids": ids, "attention_mask": [1] * len(ids)}
        for ids in (encode_prompt(tokenizer, p) for p in prompts)
    ]
    batch = PaddingCollator(tokenizer.pad_token_id, side="left")(feats)
    out = generate(net, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                   eos_token_id=tokenizer.eos_token_id, temperature=temperature, top_p=top_p, seed=seed)  # fmt: skip
    for q, toks, st in zip(questions, out.tokens, out.stats):
        print(
            f"### Instruction:\n{q}\n\n### Response:\n{tokenizer.decode(toks, skip_special_tokens=True).strip()}"
        )
        print(f"[exec ratio {st['exec_ratio']:.3f} | FLOPs ratio {st['flops_ratio']:.3f} | "
              f"KV ratio {st['kv_ratio']:.3f} | {st['new_tokens']} tokens]\n")  # fmt: skip
    print(f"decode: {out.decode_tokens_per_s:.1f} tokens/s")


def evaluate(
    dllm: str | None = "runs/dllm/dllm",
    data: str = "piqa",
    metric: str = "auto",
    model: str | None = None,
    split: str = "test",
    choice_format: str = "number",
    limit: int | None = 200,
    test_size: int = 200,
    batch_size: int = 8,
    seqlen: int = 256,
    max_chunks: int = 16,
    output: str | None = None,
    dtype: str | None = None,
) -> None:
    """Accuracy (choice tasks) or perplexity, with the execution, FLOPs and KV-entries ratios.

    DATA: an offline task (accuracy for piqa/boolq/social_i_qa/openbookqa/mmlu, response perplexity
    for gsm8k), ``text`` (Shakespeare perplexity, GPTQ style, via leanlm.core.evaluation), or a folder
    / file as for dllm-finetune. ``--dllm ''`` evaluates the plain base model.
    ``--choice_format text`` scores every option's text by log-likelihood (lm-eval style) instead of
    asking for its number.
    """
    from leanlm.core.models import load_tokenizer
    from leanlm.core.records import write_json
    from leanlm.dllm import evaluate as ev
    from leanlm.dllm.data import load_examples

    if metric not in ("auto", "accuracy", "perplexity"):
        raise UserError(f"--metric must be auto, accuracy or perplexity, got {metric!r}")
    net = _load(dllm, model, dtype)
    tokenizer = load_tokenizer(model or net.config.base_model)
    if data == "text":
        result = ev.text_perplexity(net, tokenizer, "text", seqlen=seqlen, max_chunks=max_chunks)
    else:
        examples = load_examples(data, split, limit=limit, test_size=test_size, choice_format=choice_format)
        choice = all(e.num_choices > 0 for e in examples)
        if metric == "accuracy" or (metric == "auto" and choice):
            result = ev.choice_accuracy(net, tokenizer, examples, batch_size)
        else:
            result = ev.response_perplexity(net, tokenizer, examples, batch_size)
    result = {"data": data, **result}
    if output:
        write_json(output, result)
    print(json.dumps(result, indent=2))


finetune_main = entry(finetune, "dllm-finetune")
chat_main = entry(chat, "dllm-chat")
eval_main = entry(evaluate, "dllm-eval")
