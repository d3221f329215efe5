"""The demo runner's thread policy: half the cores unless OMP_NUM_THREADS is set, restored afterwards."""

from __future__ import annotations

import os

import torch

from leanlm.core.demo import demo_threads, small_model_threads


def test_small_model_threads_policy(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert small_model_threads(7) == 7  # the user chose: keep what torch has
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert small_model_threads(7) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert small_model_threads(7) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert small_model_threads(7) == 1


def test_demo_threads_sets_and_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    try:
        with demo_threads() as n:
            assert n == 2 and torch.get_num_threads() == 2
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
