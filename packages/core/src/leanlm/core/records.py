"""JSON and JSONL records: strict reading, atomic writing, and a resumable append-only writer.

Every reader error names the file and the 1-based line number. Every whole-file write goes
through a temporary file in the same folder (fsynced), ``os.replace`` and an fsync of the folder,
so a crash leaves either the old file or the new one, never half of one. A whole folder (a converted
model, an unpacked wheel) is built under ``staging_dir(folder)`` and moved in by ``publish_dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from leanlm.core.errors import RecordError, UserError

Record = dict[str, Any]


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a JSON or JSONL file")
    return p


def iter_jsonl_numbered(
    path: str | os.PathLike, *, require_objects: bool = True
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, value)`` for each non-blank line, so callers can name the line in later checks."""
    p = _existing(path)
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(p, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
            if require_objects and not isinstance(record, dict):
                raise RecordError(p, lineno, f"expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def iter_jsonl(path: str | os.PathLike, *, require_objects: bool = True) -> Iterator[Record]:
    """Yield the records of a JSONL file; blank lines are skipped, bad lines raise ``RecordError``."""
    for _, record in iter_jsonl_numbered(path, require_objects=require_objects):
        yield record


def read_jsonl(path: str | os.PathLike, *, require_objects: bool = True) -> list[Record]:
    return list(iter_jsonl(path, require_objects=require_objects))


def read_json(path: str | os.PathLike) -> Any:
    p = _existing(path)
    text = p.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(p, e.lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read a list of objects from ``.jsonl`` (one per line) or ``.json`` (a list, or {"data": [...]})."""
    p = Path(path)
    if p.suffix in {".jsonl", ".ndjson"}:
        return read_jsonl(p)
    data = read_json(p)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise RecordError(p, None, "expected a JSON list of objects")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise RecordError(p, None, f"item {i} is a {type(item).__name__}, expected an object")
    return data


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _remove_stale_temps(p: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files beside ``p`` left by writers that were killed."""
    for tmp in p.parent.glob(f".{p.name}.*.tmp"):
        pid = tmp.name[len(p.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    The data is fsynced before the rename and the folder after it, so after a crash ``path`` holds
    the old or the new content. The file gets the permissions of the file it replaces, or those the
    user's umask gives a new file (not ``mkstemp``'s 0600). Temporary files of killed writers
    (their pid is in the name) are removed on the next write.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{os.getpid()}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, (p.stat().st_mode & 0o7777) if p.exists() else (0o666 & ~_umask()))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(p.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def staging_dir(folder: str | os.PathLike) -> Path:
    """The temporary path ``.<name>.<pid>.tmp`` beside ``folder`` to build it in, cleared of any
    earlier attempt by this pid; not created (``save_pretrained`` and friends create it)."""
    p = Path(folder)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def publish_dir(tmp: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``folder`` in one rename; if ``folder`` is already there
    (another process published first), keep theirs and delete ``tmp``.

    Crash semantics: the rename is atomic, so readers see no ``folder`` or a whole one, never a
    half-built one; a process killed before it leaves only its ``tmp`` behind (a later
    ``staging_dir`` under the same pid clears it; others stay until removed). The parent folder is fsynced after the rename, but the files
    inside ``tmp`` are only as durable as their writer made them: after a power loss a published
    folder may hold files the disk never got.
    """
    tmp, folder = Path(tmp), Path(folder)
    try:
        if folder.exists():
            raise FileExistsError(folder)
        os.replace(tmp, folder)  # still fails if a racer's rename landed since the check
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        fsync_dir(folder.parent)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> None:
    with atomic_path(path) as f:
        json.dump(data, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[Record]) -> None:
    with atomic_path(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as f:
        f.write(text)


class ResumableJsonlWriter:
    """Append-only JSONL output keyed by record id, safe to kill at any moment.

    Each record is written as one line and flushed to the OS before ``write`` returns, so a killed
    process never loses a finished record (the kernel holds the data). ``fsync=True`` also forces
    each line to disk, which survives a machine crash too but costs a few ms per record; by
    default the file is fsynced on ``close``. On open, a torn last line (a crash mid-write) is
    cut off and the ids already present are loaded into ``done``; callers skip those.
    """

    def __init__(self, path: str | os.PathLike, id_key: str = "id", *, fsync: bool = False):
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[Any, Record] = {}
        if self.path.exists():
            self._recover()
        self._f = self.path.open("a", encoding="utf-8")

    def _recover(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        for lineno, line in enumerate(raw.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # torn final line from a crash: drop it
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(self.path, lineno, f"invalid JSON ({e.msg})") from None
                if not isinstance(record, dict) or self.id_key not in record:
                    raise RecordError(self.path, lineno, f"record has no '{self.id_key}' field")
                self.done[record[self.id_key]] = record
            good_end += len(line)
        if good_end != len(raw):
            with self.path.open("r+b") as f:
                f.truncate(good_end)

    def __contains__(self, record_id: Any) -> bool:
        return record_id in self.done

    def write(self, record: Record) -> None:
        if self.id_key not in record:
            raise ValueError(f"record has no '{self.id_key}' field: {record!r:.200}")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.done[record[self.id_key]] = record

    def records(self) -> list[Record]:
        return list(self.done.values())

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> ResumableJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
