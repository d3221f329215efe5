"""leanlm.dllm: D-LLM per-token layer skipping on HF LLaMA-family models.

    from leanlm.dllm import DLLM, DLLMConfig, generate
    dllm = DLLM.from_base(base_model, DLLMConfig(target=0.5))   # routers + LoRA on q/k/v
    ... train (leanlm.dllm.train.finetune) ...
    dllm.save("runs/x/dllm"); dllm = DLLM.load("runs/x/dllm")  # merged LoRA, ready to decode
    out = generate(dllm, input_ids, attention_mask, max_new_tokens=64)
"""

from leanlm.dllm.config import DLLMConfig
from leanlm.dllm.decode import GenerationOutput, generate, reference_generate
from leanlm.dllm.model import DLLM, DLLMOutput

__version__ = "0.1.0"
__all__ = ["DLLM", "DLLMConfig", "DLLMOutput", "GenerationOutput", "generate", "reference_generate", "__version__"]
