"""keep_freed_memory: freed large buffers stay in the process (checked through RSS in a fresh process)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import sys
import torch
from leanlm.core.cpu_memory import keep_freed_memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
x = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page touched
before = rss_mib()
del x
print(before - rss_mib())
"""


def _drop_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_buffers_stay_in_the_heap():
    assert _drop_mib("default") > 48  # glibc unmaps a 64 MiB block on free
    assert _drop_mib("keep") < 16  # with keep_freed_memory() it stays for the next allocation
