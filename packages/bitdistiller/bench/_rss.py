"""Peak resident memory of this process, stdlib only: imported by ``decode_speed.py`` and by ``llamacpp_child.py``
(which runs in the bench-only llama.cpp venv, where leanlm is not installed)."""

import resource


def peak_rss_mib() -> float:
    """VmHWM of this process (MiB). Not ``ru_maxrss``: Linux keeps that across exec, so a child would report
    its parent's peak (every variant read 3116 MiB, the parent's, in the first run)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
