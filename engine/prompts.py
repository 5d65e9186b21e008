"""User prompts for one stream, from any thread: the pipeline drains them between two frames and applies
them to the tracker through the decisions path, on the frame it has just stepped.

    queue = pipeline.prompts
    future = queue.track(points=[(160, 120)], labels=[1])   # a new object; future.result() is its id
    queue.track(box=(100, 80, 220, 300))                    # another, from a box
    queue.refine(3, points=[(150, 90)], labels=[0])         # object 3: (150, 90) is background
    queue.remove(3)

Points and boxes are in frame pixels; labels are 1 (foreground) or 0 (background). Each call returns a
``concurrent.futures.Future`` that holds the object's id once the prompt was applied, or the
``StreamsegError`` that refused it (a point outside the frame: ``ConfigError``; an id that is not
tracked: ``UnknownTrackError``). A refused prompt never stops the stream. A future cancelled before the
pipeline reaches it is dropped unapplied.
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
        """Track a new object (``obj_id`` None: the next free id), or object ``obj_id`` (refined when
        tracked, started under that id when not), from a box and/or labelled points in frame pixels.
        The prompt's form is checked here (ConfigError); its bounds when applied."""
        prompt = UserPrompt(obj_id=obj_id, box=None if box is None else tuple(float(v) for v in box),
                            points=tuple((float(x), float(y)) for x, y in points),
                            labels=tuple(int(v) for v in labels))
        return self.put(prompt)

    def refine(self, obj_id: int, *, box: Box | Sequence[float] | None = None,
               points: Sequence[Sequence[float]] = (), labels: Sequence[int] = ()) -> Future:
        """Prompt tracked object ``obj_id`` again (a correction on this frame); refused with
        ``UnknownTrackError`` when it is not tracked, where ``track(obj_id=...)`` would start it."""
        prompt = UserPrompt(obj_id=int(obj_id), box=None if box is None else tuple(float(v) for v in box),
                            points=tuple((float(x), float(y)) for x, y in points),
                            labels=tuple(int(v) for v in labels), refine=True)
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
