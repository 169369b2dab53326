"""Errors shared by every room: bad input is reported with where it happened, never as a traceback."""

from __future__ import annotations


class InputError(Exception):
    """Input that cannot be read further. ``where`` names the file (and stream) and the byte offset."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None,
                 stream: str | None = None) -> None:
        self.message = message
        self.path = path
        self.offset = offset
        self.stream = stream
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if self.stream is not None:
            where.append(f"stream {self.stream}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message
