"""User prompts for one stream, from any thread: the pipeline drains them between two frames and applies
them to the tracker through the decisions path, on the frame it has just stepped.

    queue = pipeline.prompts
    future = queue.track(box=(100, 80, 220, 300))     # a new object; future.result() is its id
    queue.track(obj_id=3, points=[(150, 90)], labels=[0])   # refine object 3: (150, 90) is background
    queue.remove(3)

Each call returns a ``concurrent.futures.Future`` that holds the object's id once the prompt was applied,
or the ``StreamsegError`` that refused it (a box outside the frame, an unknown id). A refused prompt never
stops the stream.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

from engine.errors import ConfigError
from engine.types import Box, Retire, RetireReason, UserPrompt

UserRequest = UserPrompt | Retire


class PromptQueue:
    """A bounded, thread-safe queue of user prompts (``UserPrompt``) and removals (``Retire``).

    Args:
        capacity: most prompts waiting at once; a prompt beyond it is refused at once (ConfigError),
            so a flood of requests cannot grow memory while a frame is being processed.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ConfigError(f"prompt queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._waiting: deque[tuple[UserRequest, Future]] = deque()

    def put(self, request: UserRequest) -> Future:
        """Queue ``request``; its future resolves to the object id when the pipeline applies it."""
        if not isinstance(request, (UserPrompt, Retire)):
            raise ConfigError(f"a prompt queue takes UserPrompt or Retire values, not {type(request).__name__}")
        future: Future = Future()
        with self._lock:
            if len(self._waiting) >= self.capacity:
                raise ConfigError(f"prompt queue full ({self.capacity} prompts waiting); retry after a frame")
            self._waiting.append((request, future))
        return future

    def track(self, *, box: Box | Sequence[float] | None = None, points: Sequence[Sequence[float]] = (),
              labels: Sequence[int] = (), obj_id: int | None = None) -> Future:
        """Track a new object (``obj_id`` None) or refine ``obj_id``, from a box and/or labelled points in
        frame pixels. The prompt's form is checked here (ConfigError); its bounds when applied."""
        prompt = UserPrompt(obj_id=obj_id, box=None if box is None else tuple(float(v) for v in box),
                            points=tuple((float(x), float(y)) for x, y in points),
                            labels=tuple(int(v) for v in labels))
        return self.put(prompt)

    def remove(self, obj_id: int) -> Future:
        """Stop tracking ``obj_id``."""
        return self.put(Retire(int(obj_id), RetireReason.USER))

    def drain(self) -> list[tuple[UserRequest, Future]]:
        """Everything queued so far, oldest first, taken off the queue."""
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)
