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
