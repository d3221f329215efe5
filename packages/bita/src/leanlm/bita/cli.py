"""Console scripts: bita-gen-prompts, bita-gen-outputs, bita-train, bita-eval, bita-generate.

Each is ``config_command(Options, run)``: its flags are the fields of a dataclass in ``options.py``
(typed from the command line in one place) and ``run`` takes it (``commands.py``, ``train.py``).
Every one takes ``--help``; user mistakes print one line and exit with code 2.
"""

from __future__ import annotations

from leanlm.bita.commands import run_eval, run_gen_outputs, run_gen_prompts, run_generate
from leanlm.bita.options import (
    EvalOptions,
    GenerateOptions,
    GenOutputsOptions,
    GenPromptsOptions,
    TrainOptions,
)
from leanlm.bita.train import run_train
from leanlm.core.config_cli import config_command
from leanlm.core.console import entry

gen_prompts = config_command(GenPromptsOptions, run_gen_prompts)
gen_outputs = config_command(GenOutputsOptions, run_gen_outputs)
train = config_command(TrainOptions, run_train)
evaluate = config_command(EvalOptions, run_eval)
generate = config_command(GenerateOptions, run_generate)

gen_prompts_main = entry(gen_prompts, "bita-gen-prompts")
gen_outputs_main = entry(gen_outputs, "bita-gen-outputs")
train_main = entry(train, "bita-train")
eval_main = entry(evaluate, "bita-eval")
generate_main = entry(generate, "bita-generate")
