"""What a sink is, and the thread that feeds the sinks so encoding overlaps inference."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import SinkError
from engine.types import FrameResult


@runtime_checkable
class Sink(Protocol):
    """Receives every result in order. ``wants_overlay`` asks the pipeline to render the frame."""

    wants_overlay: bool

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


def check_writable(path: str | os.PathLike, *, option: str) -> Path:
    """Fail before the run starts when ``path`` cannot be written, naming the option to change."""
    path = Path(path)
    if path.is_dir():
        raise SinkError(f"cannot write {path}: it is a directory; give a file path to {option}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: directory {parent} does not exist; create it or change {option}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SinkError(f"cannot write {path}: permission denied; choose a writable path for {option}")
    return path


_DONE = object()


class SinkThread:
    """Writes results to the sinks on one background thread, in order, never dropping any.

    The queue is bounded, so a sink slower than the pipeline applies back-pressure instead of holding
    an unbounded backlog. A sink's error is raised to the pipeline at its next ``put`` or at ``close``;
    the other sinks are still closed properly, so their files stay valid.
    """

    def __init__(self, sinks: list[Sink], *, capacity: int = 4) -> None:
        self.sinks = sinks
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sinks", daemon=True)
        self._thread.start()

    def put(self, result: FrameResult) -> None:
        self._raise_pending()
        while True:
            try:
                self._queue.put(result, timeout=0.5)
                return
            except queue.Full:
                self._raise_pending()

    def close(self) -> None:
        """Flush every queued result, close every sink, and raise the first sink error, if any."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _DONE:
                if self._error is None:
                    try:
                        for sink in self.sinks:
                            sink.write(item)
                    except BaseException as exc:  # reported to the pipeline; keep draining
                        self._error = exc
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except BaseException as exc:
                    self._error = self._error or exc
