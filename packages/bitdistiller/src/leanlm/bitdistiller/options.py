"""Every bitdistiller command's flags, each stated once as a dataclass field (``leanlm.core.config_cli``).

``cli`` turns each config into its console script (``config_command``): the fields are the flags,
in this order also the positional arguments, with these defaults and help texts. The library takes
the typed config (``train.train(TrainOptions)``, ``teacher.generate_teacher_data(GenerateOptions)``),
so no parameter list is copied from the command line into a library call. Importing this module
loads neither torch nor transformers (``--help`` stays fast).

Training flags have the names of ``leanlm.core.training.TrainFlags`` and map through it: unset
(None) flags keep ``BITDISTILLER_RECIPE``'s value, the paper's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from leanlm.core.config_cli import fields_for, flag
from leanlm.core.training import TrainFlags

if TYPE_CHECKING:
    from leanlm.bitdistiller.quant import QuantSpec
    from leanlm.core.generation.spec import BackendSpec

# the paper's recipe (train.sh): lr 8e-6 constant, seq 1024, global batch 8 GPUs x 16 = 128, 4 epochs (LLaMA-2)
BITDISTILLER_RECIPE = TrainFlags(
    learning_rate=8e-6,
    lr_scheduler_type="constant",
    weight_decay=0.0,
    batch_size=16,
    grad_accum=8,
    epochs=4,
    logging_steps=1,
    save_steps=50,
    save_total_limit=3,
    seed=42,
)

MODEL = "model name or folder ('default': the embedded model)"
QUANT_TYPE = "int (2/3/4 bits) or nf3"
W_BIT = "bits per weight"
DTYPE = "fp32|bf16|fp16 (default: bf16 on CUDA, fp32 on CPU)"
DEVICE = "cpu|cuda (default: cuda when available)"
SAVED = " (default: the model's saved quantization_config; none: full precision)"


class LoadFlags(Protocol):
    """The flags that pick and quantize the model an evaluation or export loads."""

    model: str
    quant_type: str | None
    w_bit: int | None
    group_size: int | None
    dtype: str | None


def _quant_spec(model: str, quant_type: str, w_bit: int, group_size: int | None) -> QuantSpec:
    from leanlm.bitdistiller.group_size import fit_group_size
    from leanlm.bitdistiller.quant import QuantSpec

    return QuantSpec(quant_type, w_bit, fit_group_size(model, group_size))


@dataclass(frozen=True)
class ClipOptions:
    """bitdistiller-clip: the asymmetric clipping search, its cache, the clipped model."""

    model: str = flag("default", MODEL)
    quant_type: str = flag("int", QUANT_TYPE)
    w_bit: int = flag(2, W_BIT)
    group_size: int | None = flag(None, "inputs per quantization group (default: 128, 64 or 32, what fits)")
    calib_dataset: str = flag("text", "calibration texts: text|code|gsm8k|FILE")
    dump_clip: str | None = flag(None, "where to save the clip cache")
    n_samples: int = flag(128, "calibration blocks")
    seqlen: int = flag(1024, "tokens per calibration block")
    batch_size: int = flag(8, "calibration blocks per forward pass")
    n_grid: int = flag(
        20, "grid resolution: shrink steps of 1/n_grid, max_shrink * n_grid each for max and min"
    )
    max_shrink: float = flag(0.5, "the largest fraction a group's max or min shrinks by")
    overwrite: bool = flag(False, "search again although --dump-clip exists")
    save_model: str | None = flag(None, "folder for the clipped model (latent weights + quantization_config)")
    apply: str | None = flag(None, "apply this clip cache instead of searching")
    dtype: str | None = flag(None, DTYPE)
    device: str | None = flag(None, DEVICE)

    def quant_spec(self) -> QuantSpec:
        """The quantization, its group size fitted to the model's layers (before any weight loads)."""
        return _quant_spec(self.model, self.quant_type, self.w_bit, self.group_size)


@dataclass(frozen=True)
class GenerateOptions:
    """bitdistiller-generate: the full-precision teacher answers a dataset's prompts."""

    model: str = flag(
        "default", MODEL + "; with --backend openai the served name ('default': ask the server)"
    )
    dataset: str = flag("wikitext", "prompts: wikitext|alpaca|code|math|FILE")
    output: str | None = flag(None, "the teacher file (default: a name from the settings, in --output_dir)")
    output_dir: str = flag(".", "folder for the teacher file when --output is not given")
    max_sample: int | None = flag(3000, "at most this many prompts (a seeded sample)")
    temperature: float = flag(0.7, "sampling temperature")
    top_p: float = flag(1.0, "nucleus sampling mass")
    max_new_tokens: int = flag(1024, "tokens per answer")
    seed: int = flag(42, "prompt sample and sampling seed")
    backend: str = flag("hf", "hf|vllm|openai")
    batch_size: int = flag(16, "prompts per batch (in-process backends)")
    base_url: str | None = flag(None, "the OpenAI-compatible server (--backend openai)")
    api_key: str | None = flag(None, "its key (default: $OPENAI_API_KEY)")
    concurrency: int = flag(8, "requests in flight (servers)")
    max_failed_fraction: float = flag(0.0, "fail when more of the answers than this fraction failed")

    def backend_spec(self) -> BackendSpec:
        """The backend these flags name; a server asked for model 'default' reports its own."""
        from leanlm.core.generation.spec import BackendSpec

        served = self.backend.lower() == "openai" and self.model == "default"
        return BackendSpec.from_flags(
            backend=self.backend,
            model=None if served else self.model,
            base_url=self.base_url,
            api_key=self.api_key,
            concurrency=self.concurrency,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class TrainOptions:
    """bitdistiller-train: KD-QAT of the fake-quantized model against its full-precision self."""

    data: str = flag(help="teacher file (bitdistiller-generate/-mix output, or prompt/response JSONL)")
    output_dir: str = flag(help="run folder: checkpoint-N/, final/, train_summary.json")
    model: str = flag("default", MODEL)
    clip: str | None = flag(None, "clip cache (bitdistiller-clip) that initialises the quantized weights")
    quant_type: str = flag("int", QUANT_TYPE)
    w_bit: int = flag(2, W_BIT)
    group_size: int | None = flag(None, "inputs per quantization group (default: 128, 64 or 32, what fits)")
    loss: str = flag("cakld", "cakld|forward|reverse|jsd|tlsd|ce")
    gamma: float | None = flag(
        None, "CAKLD's reverse-KL weight (default: the teacher's mean top-1 probability)"
    )
    gamma_batches: int = flag(10, "batches the teacher's confidence (gamma) is measured on")
    max_length: int = flag(1024, "tokens per example")
    eval_fraction: float = flag(0.0, "the first fraction of the examples held out for evaluation")
    mask_prompt: bool = flag(False, "distil over the response only (the original includes the prompt)")
    max_samples: int | None = flag(None, "at most this many teacher examples")
    dtype: str | None = flag(None, DTYPE)
    learning_rate: float | None = flag(None, "peak learning rate (recipe: 8e-6, constant)")
    epochs: float | None = flag(None, "passes over the data (recipe: 4)")
    batch_size: int | None = flag(None, "examples per process and step (recipe: 16)")
    grad_accum: int | None = flag(None, "gradient accumulation steps (recipe: 8)")
    max_steps: int | None = flag(None, "stop after this many optimizer steps")
    save_steps: int | None = flag(None, "checkpoint (and evaluate) every N steps (recipe: 50)")
    logging_steps: int | None = flag(None, "log every N steps (recipe: 1)")
    gradient_checkpointing: bool | None = flag(None, "recompute activations in the backward pass")
    seed: int | None = flag(None, "seed (recipe: 42)")
    report_to: str | None = flag(None, "none|tensorboard|wandb (comma-separated)")
    deepspeed: str | None = flag(None, "zero2|zero2_offload|zero3|zero3_offload|FILE (CUDA)")
    nproc: int | None = flag(None, "processes: relaunch this command under torchrun (DDP)")
    resume: bool = flag(True, "continue from the newest complete checkpoint")

    def __post_init__(self) -> None:
        self.train_flags()  # a bad training flag is one line now, before torchrun starts any worker

    def train_flags(self) -> TrainFlags:
        """The paper's recipe with the training flags that were given (None: the recipe's value)."""
        return BITDISTILLER_RECIPE.override(**fields_for(self, TrainFlags))

    def quant_spec(self) -> QuantSpec:
        """The quantization, its group size fitted to the model's layers (before any weight loads)."""
        return _quant_spec(self.model, self.quant_type, self.w_bit, self.group_size)


@dataclass(frozen=True)
class EvalPplOptions:
    """bitdistiller-eval-ppl: perplexity of the quantized model."""

    model: str = flag("default", MODEL)
    quant_type: str | None = flag(None, QUANT_TYPE + SAVED)
    w_bit: int | None = flag(None, W_BIT + SAVED)
    group_size: int | None = flag(None, "inputs per quantization group" + SAVED)
    clip: str | None = flag(None, "clip cache to apply before quantizing")
    dataset: str = flag("text", "text dataset or file")
    split: str | None = flag("test", "test|calib: the fixed held-out split; '': the whole dataset")
    seqlen: int = flag(2048, "tokens per chunk")
    max_chunks: int | None = flag(None, "at most this many chunks")
    batch_size: int = flag(1, "chunks per forward pass")
    dtype: str | None = flag(None, DTYPE)
    device: str | None = flag(None, DEVICE)


@dataclass(frozen=True)
class EvalTasksOptions:
    """bitdistiller-eval: lm-eval tasks."""

    model: str = flag("default", MODEL)
    tasks: str = flag("mmlu,piqa,hellaswag,winogrande,arc_challenge", "comma-separated offline tasks")
    num_fewshot: int | None = flag(None, "examples in the prompt (default: 5 for MMLU, else 0)")
    limit: int | None = flag(None, "at most this many examples per task")
    quant_type: str | None = flag(None, QUANT_TYPE + SAVED)
    w_bit: int | None = flag(None, W_BIT + SAVED)
    group_size: int | None = flag(None, "inputs per quantization group" + SAVED)
    batch_size: int = flag(1, "examples per forward pass")
    dtype: str | None = flag(None, DTYPE)
    device: str | None = flag(None, DEVICE)


@dataclass(frozen=True)
class HumanEvalOptions:
    """bitdistiller-eval-humaneval: greedy pass@1."""

    model: str = flag("default", MODEL)
    limit: int | None = flag(None, "at most this many problems")
    max_new_tokens: int = flag(512, "tokens per answer")
    batch_size: int = flag(8, "prompts per batch")
    output: str | None = flag(None, "JSONL file for the answers (resumable)")
    quant_type: str | None = flag(None, QUANT_TYPE + SAVED)
    w_bit: int | None = flag(None, W_BIT + SAVED)
    group_size: int | None = flag(None, "inputs per quantization group" + SAVED)
    dtype: str | None = flag(None, DTYPE)
    device: str | None = flag(None, DEVICE)


@dataclass(frozen=True)
class Gsm8kOptions:
    """bitdistiller-eval-gsm8k: accuracy on GSM8K."""

    model: str = flag("default", MODEL)
    limit: int | None = flag(None, "at most this many questions")
    max_new_tokens: int = flag(512, "tokens per answer")
    temperature: float = flag(0.0, "sampling temperature (0: greedy)")
    batch_size: int = flag(8, "prompts per batch")
    output: str | None = flag(None, "JSONL file for the answers (resumable)")
    quant_type: str | None = flag(None, QUANT_TYPE + SAVED)
    w_bit: int | None = flag(None, W_BIT + SAVED)
    group_size: int | None = flag(None, "inputs per quantization group" + SAVED)
    dtype: str | None = flag(None, DTYPE)
    device: str | None = flag(None, DEVICE)


@dataclass(frozen=True)
class ExportOptions:
    """bitdistiller-export: the packed low-bit folder or one GGUF file."""

    model: str = flag(help="the trained (or clipped) model folder")
    output_dir: str = flag(help="folder to write (--format gguf: a folder or a FILE.gguf)")
    quant_type: str | None = flag(None, QUANT_TYPE + SAVED)
    w_bit: int | None = flag(None, W_BIT + SAVED)
    group_size: int | None = flag(None, "inputs per quantization group" + SAVED)
    clip: str | None = flag(None, "clip cache to apply before packing")
    scale_dtype: str = flag("fp16", "fp16|fp32 per-group scales")
    dtype: str | None = flag(
        None, "fp32|bf16|fp16 of the unquantized tensors (default fp32: export runs on the CPU)"
    )
    format: str = flag("packed", "packed|gguf")
    lm_head: str = flag("float", "float|int8 (packed: the output head and a tied embedding as int8)")
