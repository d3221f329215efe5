"""Where leanlm keeps its caches: ``$LEANLM_HOME`` (default ``~/.cache/leanlm``)."""

from __future__ import annotations

import os
from pathlib import Path


def leanlm_home() -> Path:
    """The cache root; created on first use."""
    home = Path(os.environ.get("LEANLM_HOME") or Path.home() / ".cache" / "leanlm").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
