"""Speed of SwitchBack vs float layers: one linear layer forward+backward, and a whole training step.

Layer modes (X [tokens, width], W [width * expansion, width]):
``linear-fp32``, ``linear-bf16`` (``nn.Linear``), ``standard-bf16`` (the 16-bit reference layer),
``switchback-bf16``/``switchback-fp32`` (global), ``vectorwise-bf16``, ``memeff-bf16``, and
``torchao-bf16`` (torchao's int8 mixed-precision training with grad_weight in bf16, if importable).

Training-step modes (forward, loss, backward, AdamW step): ``fp32``, ``bf16`` (bf16 weights),
``switchback-bf16``, ``switchback-fp32`` and ``torchao-bf16``, on the embedded model or on a random
model with TinyLlama-1.1B's shapes (``tinyllama-shapes``, optionally fewer layers).
Times are medians over ``repeats`` after ``warmup`` calls; on CUDA each call ends with a synchronize.

Modules: ``timing`` (median_time), ``torchao_adapter``, ``layer_bench``, ``step_bench``, ``tables``
(markdown), ``plot`` (layers.png) and ``command`` (``BenchOptions``, ``run_benchmark``: switchback-bench).
"""

from leanlm.switchback.benchmark.command import BenchOptions, run_benchmark
from leanlm.switchback.benchmark.layer_bench import LAYER_MODES, bench_layers
from leanlm.switchback.benchmark.step_bench import STEP_MODES, bench_train_step, tinyllama_shapes
from leanlm.switchback.benchmark.timing import median_time
from leanlm.switchback.benchmark.torchao_adapter import apply_torchao, torchao_status

__all__ = [
    "LAYER_MODES",
    "STEP_MODES",
    "BenchOptions",
    "apply_torchao",
    "bench_layers",
    "bench_train_step",
    "median_time",
    "run_benchmark",
    "tinyllama_shapes",
    "torchao_status",
]
