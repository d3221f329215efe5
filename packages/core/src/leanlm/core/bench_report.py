"""Benchmark scripts share one results.json and results.md per folder, one key and one section each."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from leanlm.core.records import write_json, write_text


def save_section(folder: str | Path, key: str, result: dict[str, Any], markdown: str) -> None:
    """Set ``results.json[key] = result`` and replace (or append) the ``key`` section of ``results.md``.

    Other keys and sections are kept, so several benchmarks (or devices) can write into one folder.
    Both files are written atomically.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = result
    write_json(path, data)
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    section = f"{start}\n{markdown.strip()}\n{end}"
    md = folder / "results.md"
    text = md.read_text() if md.exists() else f"# {folder.parent.name} benchmarks\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    )
    write_text(md, text.rstrip("\n") + "\n")


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What a figure depends on: CPU model and flags (AMX or not), torch's CPU kernel level, threads, GPU."""
    import os
    import platform

    import torch

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "amx": any(f.startswith("amx") for f in flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One Markdown line naming the machine of ``machine_info``."""
    amx = "AMX" if info["amx"] else "no AMX"
    extra = ", ".join(f for f in ("avx512_bf16", "avx512_vnni") if info.get(f))
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (
        f"Machine: {info['cpu']} ({info['cores']} cores), torch CPU capability {info['torch_cpu_capability']}, "
        f"{amx}{', ' + extra if extra else ''}, {info['threads']} threads{gpu}, torch {info['torch']}."
    )
