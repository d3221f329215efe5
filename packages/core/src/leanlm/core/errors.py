"""Errors a user can fix. The CLI wrapper prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file, model or key: something the user can act on."""


class RecordError(UserError, ValueError):
    """A malformed record in a data file; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")
