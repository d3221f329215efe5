import os

import torch

pytest_plugins = ["leanlm.core.testing"]

# Tiny shapes gain nothing from a second thread, and on a shared, oversubscribed CPU every OpenMP
# barrier waits for a descheduled thread: measured 0.4 s (1 thread) vs 16.7 s (2 threads) for the
# same 10 training steps of tiny_llama. Subprocesses started by the tests inherit the env var.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
