"""What a sink is, and the thread that feeds the sinks so encoding overlaps inference."""

from __future__ import annotations

import os
import queue
import stat
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from engine.errors import SinkError
from engine.types import FrameResult


@runtime_checkable
class Sink(Protocol):
    """Receives every result in order. ``wants_overlay`` asks the pipeline to render the frame; an
    optional ``wants_evidence = True`` asks it to fill ``FrameResult.evidence`` (``wants_evidence``)."""

    wants_overlay: bool

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


def wants_evidence(sink: Sink) -> bool:
    """Whether ``sink`` reads ``FrameResult.evidence`` (an optional attribute: most sinks do not)."""
    return bool(getattr(sink, "wants_evidence", False))


def check_writable(path: str | os.PathLike, *, option: str) -> Path:
    """Fail before the run starts when ``path`` cannot be written, naming the option to change.

    The check opens the path for writing the way the sink will, but creates and truncates nothing: an
    existing file is opened without ``O_TRUNC`` and closed untouched; a new name is created with
    ``O_EXCL`` and removed again. So every output of a run can be checked before any of them is
    written, and a run that fails on one output leaves the files an earlier run wrote in the others.
    This catches what permission bits miss (a read-only mount, /proc, a root-owned directory seen by
    root). A FIFO is not opened (that would wait for a reader); a full disk shows only on writing.

    Raises:
        SinkError: ``path`` is a directory, its directory is missing, or it cannot be opened for writing.
    """
    path = Path(path)
    if path.is_dir():
        raise SinkError(f"cannot write {path}: it is a directory; give a file path to {option}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: directory {parent} does not exist; create it or change "
                        f"{option}")
    try:
        _probe_open(path)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise SinkError(f"cannot write {path}: {reason}; choose a writable path for {option}") from None
    return path


def check_folder(folder: Path, *, option: str, what: str = "") -> None:
    """Fail before the run starts unless ``folder`` is a writable directory or can be created (its
    nearest existing ancestor is a writable directory), naming the option to change. ``what`` names the
    folder's role in the message ("collection folder"). Nothing is created.

    Raises:
        SinkError: ``folder`` exists but is not a writable directory, or cannot be created.
    """
    name = f"{what} {folder}".strip()
    if folder.exists():
        if not folder.is_dir():
            raise SinkError(f"cannot write {name}: it is not a directory; choose another {option}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SinkError(f"cannot write {name}: permission denied; choose a writable {option}")
        return
    ancestor = next(p for p in folder.absolute().parents if p.exists())
    if not ancestor.is_dir():
        raise SinkError(f"cannot create {name}: {ancestor} is not a directory; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SinkError(f"cannot create {name}: permission denied in {ancestor}; choose a writable {option}")


def _probe_open(path: Path) -> None:
    try:
        if stat.S_ISFIFO(path.stat().st_mode):
            return
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # created by someone else since the stat: probe it as an existing file
            pass
        else:
            os.close(fd)
            path.unlink()
            return
    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


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
                    except BaseException as exc:  # noqa: BLE001 - reported to the pipeline; keep draining
                        self._error = exc
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except BaseException as exc:  # noqa: BLE001 - every sink is closed; the first error is raised
                    self._error = self._error or exc
