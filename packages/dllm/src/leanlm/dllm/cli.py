"""Console scripts: dllm-finetune, dllm-chat, dllm-eval (fire; ``--help`` on each).

Each command is ``config_command(Options, run)``: its flags are the fields of the options class in
``leanlm.dllm.options``, and the run function below reads the typed instance.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path
from typing import Any

from leanlm.core.config_cli import config_command
from leanlm.core.console import entry
from leanlm.core.errors import UserError
from leanlm.dllm.options import ChatOptions, EvalOptions, FinetuneOptions

log = logging.getLogger("leanlm.dllm")

DEFAULT_INSTRUCTS = [
    "Name three ways to save energy at home.",
    "Explain in two sentences what a transformer layer does.",
    "Write a short haiku about autumn rain.",
]


def run_finetune(o: FinetuneOptions) -> None:
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
    from leanlm.dllm import train
    from leanlm.dllm.data import load_examples, tokenize
    from leanlm.dllm.model import DLLM, check_supported_name

    flags, config = o.train_flags(), o.dllm_config()
    check_supported_name(o.model)  # before data, launch and weights
    examples = load_examples(
        o.data,
        "train",
        template=o.template,
        limit=o.limit,
        test_size=o.test_size,
        seed=o.seed,
        choice_format=o.choice_format,
    )
    maybe_launch(o.nproc)
    set_seed(o.seed)
    tokenizer = load_tokenizer(o.model)
    dllm = DLLM(load_model(o.model, dtype=o.dtype), config)
    features = tokenize(tokenizer, examples, o.max_length)
    log.info("training on %d examples from %s", len(features), o.data)
    summary = train.finetune(
        dllm,
        tokenizer,
        features,
        o.output,
        flags,
        blr=o.blr,
        router_lr=o.router_lr,
        router_schedule=o.router_schedule,
    )
    summary.pop("history", None)
    if not is_main_process():  # every rank holds the same routers + LoRA (DDP): rank 0 writes them
        return
    folder = dllm.save(Path(o.output) / "dllm")
    print(json.dumps({"saved": str(folder), "world_size": world_size(), **summary}, indent=2))


def _instructs(value: Any) -> list[str]:
    """``--instructs`` as fire gives it (a list, a "['a', 'b']" string, one instruction) -> strings."""
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
    """The saved D-LLM in folder ``dllm`` on its base model, or with ``dllm`` empty the plain base model
    (a D-LLM without routers or LoRA: every block runs)."""
    from leanlm.dllm.config import DLLMConfig
    from leanlm.dllm.model import DLLM

    if dllm:
        return DLLM.load(dllm, model, dtype=dtype)
    from leanlm.core.models import load_model

    return DLLM(load_model(model or "default", dtype=dtype), DLLMConfig(dynamic=False, lora_rank=0)).eval()


def run_chat(o: ChatOptions) -> None:
    """Answer INSTRUCTS (a list, "['...', '...']") with the alpaca template; defaults when none are given.

    Prints each answer and its compute: executed-layer ratio, FLOPs ratio against the dense model
    (router cost included) and KV-entries ratio. ``--dllm ''`` runs the plain base model.
    """
    from leanlm.core.models import load_tokenizer
    from leanlm.core.sft import PaddingCollator, encode_prompt
    from leanlm.core.templates import format_prompt
    from leanlm.dllm.decode import generate

    questions = _instructs(o.instructs)
    net = _load(o.dllm, o.model, o.dtype)
    tokenizer = load_tokenizer(o.model or net.config.base_model)
    prompts = [format_prompt("alpaca", q) for q in questions]
    feats = [
        {"input_ids": ids, "attention_mask": [1] * len(ids)}
        for ids in (encode_prompt(tokenizer, p) for p in prompts)
    ]
    batch = PaddingCollator(tokenizer.pad_token_id, side="left")(feats)
    out = generate(
        net,
        batch["input_ids"],
        batch["attention_mask"],
        max_new_tokens=o.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        temperature=o.temperature,
        top_p=o.top_p,
        seed=o.seed,
    )
    for q, toks, st in zip(questions, out.tokens, out.stats):
        answer = tokenizer.decode(toks, skip_special_tokens=True).strip()
        print(f"### Instruction:\n{q}\n\n### Response:\n{answer}")
        print(
            f"[exec ratio {st['exec_ratio']:.3f} | FLOPs ratio {st['flops_ratio']:.3f} | "
            f"KV ratio {st['kv_ratio']:.3f} | {st['new_tokens']} tokens]\n"
        )
    print(f"decode: {out.decode_tokens_per_s:.1f} tokens/s")


def run_evaluate(o: EvalOptions) -> None:
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

    net = _load(o.dllm, o.model, o.dtype)
    tokenizer = load_tokenizer(o.model or net.config.base_model)
    if o.data == "text":
        result = ev.text_perplexity(net, tokenizer, "text", seqlen=o.seqlen, max_chunks=o.max_chunks)
    else:
        examples = load_examples(
            o.data, o.split, limit=o.limit, test_size=o.test_size, choice_format=o.choice_format
        )
        choice = all(e.num_choices > 0 for e in examples)
        if o.metric == "accuracy" or (o.metric == "auto" and choice):
            result = ev.choice_accuracy(net, tokenizer, examples, o.batch_size)
        else:
            result = ev.response_perplexity(net, tokenizer, examples, o.batch_size)
    result = {"data": o.data, **result}
    if o.output:
        write_json(o.output, result)
    print(json.dumps(result, indent=2))


finetune = config_command(FinetuneOptions, run_finetune)
chat = config_command(ChatOptions, run_chat)
evaluate = config_command(EvalOptions, run_evaluate)

finetune_main = entry(finetune, "dllm-finetune")
chat_main = entry(chat, "dllm-chat")
eval_main = entry(evaluate, "dllm-eval")
