"""leanlm.dllm: D-LLM per-token layer skipping on HF LLaMA-family models.

    from leanlm.dllm import DLLM, DLLMConfig, generate
    dllm = DLLM(base_model, DLLMConfig(target=0.5))           # routers + LoRA on q/k/v
    ... train (leanlm.dllm.train.finetune) ...
    dllm.save("runs/x/dllm"); dllm = DLLM.load("runs/x/dllm")  # merged LoRA, ready to decode
    out = generate(dllm, input_ids, attention_mask, max_new_tokens=64)

Names are imported lazily so that the console scripts answer ``--help`` without loading torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "DLLM": "leanlm.dllm.model",
    "DLLMOutput": "leanlm.dllm.model",
    "DLLMConfig": "leanlm.dllm.config",
    "GenerationOutput": "leanlm.dllm.decode",
    "KVCache": "leanlm.dllm.decode",
    "generate": "leanlm.dllm.decode",
    "reference_generate": "leanlm.dllm.decode",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'leanlm.dllm' has no attribute {name!r}")
