"""Outputs that take results already encoded as JSONL lines: what a Ray driver receives from its workers.

On a cluster the results of a stream are encoded where the stream runs (the masks' tensors are there,
and a line is a few KB where the masks are MBs) and written where the driver runs. ``LineSink`` is the
output side of that: ``MqttSink`` is one (``write_line``), and ``JsonlLineWriter`` writes a stream's
JSONL file with the same guarantees as ``engine.sinks.JsonlWriter``: one unbuffered ``write`` per
line, a failed write cut back to the last whole line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import SinkError
from engine.sinks.base import check_writable


@runtime_checkable
class LineSink(Protocol):
    """Receives one stream's encoded results in order (each a JSONL line without its newline)."""

    def write_line(self, line: bytes) -> None: ...

    def close(self) -> None: ...


class JsonlLineWriter:
    """A stream's JSONL file from encoded lines. The path is checked when the writer is made; the file
    is created (or truncated) on the first line, so a stream that never runs leaves no empty file.

    Raises:
        SinkError: the path cannot be written (at construction), or a write failed (the file then
            ends at the last whole line).
    """

    def __init__(self, path: str | os.PathLike, *, option: str = "jsonl") -> None:
        self.path: Path = check_writable(path, option=option)
        self.option = option
        self.lines = 0
        self._file = None
        self._size = 0  # bytes of whole lines written; a failed write is truncated back to it

    def write_line(self, line: bytes) -> None:
        if self._file is None:
            try:
                # Unbuffered: each line reaches the file in one write() call, never split across two.
                self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - open across writes
            except OSError as exc:
                raise SinkError(f"cannot write {self.path}: {exc.strerror}; choose another {self.option} path") from None
        data = line if line.endswith(b"\n") else line + b"\n"
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            try:
                os.ftruncate(self._file.fileno(), self._size)
            except OSError:
                pass  # the disk refused even that; the next reader sees one cut-off last line
            raise SinkError(f"writing {self.path} failed after {self.lines} lines: {exc.strerror}") from None
        self._size += len(data)
        self.lines += 1

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
