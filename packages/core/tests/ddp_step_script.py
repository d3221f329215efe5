"""Run by test_training: a 2-step HF Trainer job on tiny_llama, launched through maybe_launch.

Each rank writes its world size, rank and a checksum of the trained weights to OUT/rank<r>.json;
DDP keeps replicas identical, so the checksums must agree.
"""

import json
import os
import sys

from leanlm.core.distributed import maybe_launch, rank, world_size

if __name__ == "__main__":
    out = sys.argv[1]
    maybe_launch(2)  # re-executes this script under torchrun with 2 processes
    import torch
    from transformers import Trainer

    from leanlm.core.models import load_tokenizer
    from leanlm.core.sft import PaddingCollator, tokenize_example
    from leanlm.core.testing.tiny_models import tiny_llama
    from leanlm.core.training import training_arguments

    tok = load_tokenizer("default")
    model = tiny_llama(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    data = [tokenize_example(tok, f"Q{i}: say {i}", f" {i} {i}", max_length=32) for i in range(8)]
    args = training_arguments(
        os.path.join(out, "run"),
        {"per_device_train_batch_size": 2, "max_steps": 2, "learning_rate": 1e-2, "save_strategy": "no"},
        {"ddp_backend": "gloo", "disable_tqdm": True},
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=PaddingCollator(tok.pad_token_id)
    )
    result = trainer.train()
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    with open(os.path.join(out, f"rank{rank()}.json"), "w") as f:
        json.dump(
            {
                "world": world_size(),
                "rank": rank(),
                "checksum": checksum,
                "loss": result.training_loss,
                "dist": torch.distributed.is_initialized(),
            },
            f,
        )
