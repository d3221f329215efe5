"""Test doubles and shared test helpers, kept out of the library modules.

Importable by every package's tests and by benches (nothing here imports pytest at module level
except ``fixtures``, the pytest plugin):

- ``fixtures``: the pytest plugin (``pytest_plugins = ["leanlm.core.testing.fixtures"]``): one-thread
  torch, the CUDA skip, ``DEVICES``, session fixtures for the tokenizer and models.
- ``cli_checks``: every console script rejects an unknown flag in one line, writing nothing.
- ``tiny_models``: small random models of each supported architecture (``tiny_llama``, ``tiny_model_dir``).
- ``fake_servers``: loopback OpenAI-compatible and TGI servers with injectable faults.
- ``scripted_teacher``: a deterministic stand-in for Lion's API model.
- ``oracles``: brute-force reference implementations that tests compare the fast paths against.
"""
