"""Bounded hand-off between the decode thread and the pipeline.

Two policies, one interface:
- ``LatestFrameBuffer`` (live sources): ``put`` never blocks; when full the oldest frame is dropped and
  counted, so a slow pipeline always works on the newest picture and latency stays bounded.
- ``BlockingFrameBuffer`` (files): ``put`` waits for room, so every frame is delivered in order and memory
  stays bounded by back-pressure.

The end of the stream, or the error that ended it, is never dropped: it is delivered after every frame
still held, so whatever a sink received before a fault is complete.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class _BoundedBuffer(Generic[T]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0  # items discarded to make room (newest-wins only)
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._finished = False  # producer is done; _error says why, None for a clean end
        self._error: BaseException | None = None
        self._closed = False  # consumer is gone; producers should stop

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T) -> bool:
        """Hand one item to the consumer. Returns False once the consumer has closed the buffer."""
        raise NotImplementedError

    def finish(self, error: BaseException | None = None) -> None:
        """Mark the end of the stream; ``error`` is raised to the consumer after the items still held."""
        with self._cond:
            if not self._finished:
                self._finished, self._error = True, error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; None at the end of the stream. Raises the producer's error after the last item,
        or ``TimeoutError`` when nothing arrives within ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._finished or self._closed, timeout):
                raise TimeoutError(f"no frame within {timeout:.1f} s")
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            return None

    def close(self) -> None:
        """The consumer is done: wake and stop any waiting producer, release held items."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class LatestFrameBuffer(_BoundedBuffer[T]):
    """Newest-frame-wins: never blocks the producer; drops (and counts) the oldest item when full."""

    def put(self, item: T) -> bool:
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True


class BlockingFrameBuffer(_BoundedBuffer[T]):
    """Every item, in order: the producer waits while the buffer is full."""

    def put(self, item: T) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.capacity or self._closed)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True
