"""Run by test_training: a 6-step HF Trainer job on tiny_llama saving every 2 steps, resumable.

``python resume_kill_script.py OUT MODE``. MODE ``kill-at-4`` SIGKILLs the process while it saves
checkpoint-4 (after the weights and optimizer are written, before trainer_state.json: what a kill
mid-save leaves); ``run`` trains (resuming through ``train_with_resume``). Writes OUT/<MODE>.json
with the checkpoint resumed from, the final step and a checksum of the final weights.
"""

import json
import os
import signal
import sys

if __name__ == "__main__":
    out, mode = sys.argv[1], sys.argv[2]
    import torch
    from transformers import Trainer

    from leanlm.core.models import load_tokenizer
    from leanlm.core.sft import PaddingCollator, tokenize_example
    from leanlm.core.testing.tiny_models import tiny_llama
    from leanlm.core.training import last_checkpoint, train_with_resume, training_arguments

    torch.manual_seed(0)
    tok = load_tokenizer("default")
    model = tiny_llama(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64)
    data = [tokenize_example(tok, f"Q{i}: say {i}", f" {i} {i}", max_length=32) for i in range(12)]
    run_dir = os.path.join(out, "run")
    args = training_arguments(
        run_dir,
        {
            "per_device_train_batch_size": 2,
            "max_steps": 6,
            "learning_rate": 1e-2,
            "save_steps": 2,
            "save_total_limit": 5,
            "seed": 0,
            "disable_tqdm": True,
            "logging_steps": 100,
        },
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=PaddingCollator(tok.pad_token_id)
    )
    if mode == "kill-at-4":
        save_rng = trainer._save_rng_state

        def kill_mid_save(output_dir):  # the optimizer is on disk, trainer_state.json is not yet
            if output_dir.endswith("checkpoint-4"):
                os.kill(os.getpid(), signal.SIGKILL)
            save_rng(output_dir)

        trainer._save_rng_state = kill_mid_save
    resumed_from = last_checkpoint(run_dir)
    train_with_resume(trainer, True)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    with open(os.path.join(out, f"{mode}.json"), "w") as f:
        json.dump(
            {
                "resumed_from": resumed_from and os.path.basename(resumed_from),
                "step": trainer.state.global_step,
                "checksum": checksum,
            },
            f,
        )
