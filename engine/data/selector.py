"""Which frames to keep for labelling: the top-k per time window, spaced apart, within a total budget.

The stream is cut into windows of ``window`` frames (by ``Frame.index``, which also counts the frames a
live buffer dropped, so a window is a fixed span of stream time at a constant frame rate). In each
window the selector keeps at most ``per_window`` frames, the highest-scoring ones, no two closer than
``min_spacing`` frames (neighbouring frames look alike: labelling both teaches little more than one),
including across the window boundary. After ``budget`` kept frames it keeps no more.

It is a greedy streaming temporal non-maximum suppression: a new frame that is within ``min_spacing`` of
a candidate scoring at least as high is dropped; otherwise it replaces the lower-scoring candidates near
it, and the lowest candidate leaves when more than ``per_window`` remain. A frame dropped this way never
comes back, even if the candidate that suppressed it is displaced later; an exact temporal NMS would
have to hold the whole window. Memory is bounded by ``per_window`` payloads, whatever the stream length.

Candidates are released, in time order, when their window closes (the first frame of a later window
arrives) or at ``finish``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SelectorConfig:
    """How many frames to keep, and how far apart. Defaults assume a 30 fps stream."""

    window: int = 300  # frames per window: 10 s at 30 fps
    per_window: int = 3  # frames kept per window at most
    min_spacing: int = 30  # frames between any two kept frames: 1 s at 30 fps
    budget: int = 500  # frames kept in all; then the selector keeps no more
    min_score: float = 0.0  # frames scoring this or less are never kept (the engine was sure enough)

    def __post_init__(self) -> None:
        for name in ("window", "per_window", "budget"):
            if getattr(self, name) < 1:
                raise ConfigError(f"collector {name} must be >= 1, got {getattr(self, name)}")
        if self.min_spacing < 0:
            raise ConfigError(f"collector min_spacing must be >= 0 frames, got {self.min_spacing}")
        if self.per_window * max(self.min_spacing, 1) > self.window:
            raise ConfigError(f"collector keeps {self.per_window} frames per {self.window}-frame window, but "
                              f"they must be {self.min_spacing} frames apart: raise window or lower "
                              "per_window or min_spacing")


@dataclass(frozen=True, slots=True)
class Kept(Generic[T]):
    """A frame the selector decided to keep."""

    index: int  # Frame.index
    score: float
    payload: T  # what the caller attached (built only when the frame became a candidate)


@dataclass(slots=True, eq=False)  # compared by identity: payloads may be arrays
class _Candidate(Generic[T]):
    index: int
    score: float
    payload: T


class FrameSelector(Generic[T]):
    """Streaming top-k-per-window frame selection (see the module docstring)."""

    def __init__(self, config: SelectorConfig = SelectorConfig(), *, already_kept: int = 0) -> None:
        self.config = config
        self.kept = already_kept  # frames released so far (a resumed collection starts with its count)
        self._candidates: list[_Candidate[T]] = []  # time order, at most per_window
        self._window: int | None = None  # index of the window the candidates belong to
        self._last_kept: int | None = None  # index of the latest released frame
        self._last_index: int | None = None

    @property
    def held(self) -> int:
        """Candidates held now (never more than ``per_window``)."""
        return len(self._candidates)

    @property
    def full(self) -> bool:
        """True once the budget is spent: no later frame can be kept."""
        return self.kept >= self.config.budget

    def offer(self, index: int, score: float, payload: Callable[[], T]) -> list[Kept[T]]:
        """Consider frame ``index`` with ``score``; ``payload()`` is called only if it becomes a candidate.

        Returns the frames released by this call (those of a window that just closed), in time order.
        Raises ValueError if ``index`` does not increase.
        """
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frame indices must increase: got {index} after {self._last_index}")
        self._last_index = index
        cfg = self.config
        released: list[Kept[T]] = []
        window = index // cfg.window
        if self._window is not None and window != self._window:
            released = self._release()
        self._window = window
        if self.full or not score > cfg.min_score:  # NaN never ranks
            return released
        if self._last_kept is not None and index - self._last_kept < cfg.min_spacing:
            return released
        near = [c for c in self._candidates if index - c.index < cfg.min_spacing]
        if any(c.score >= score for c in near):
            return released
        others = [c for c in self._candidates if c not in near]  # near ones score lower: they make way
        if len(others) >= cfg.per_window:
            weakest = min(others, key=lambda c: c.score)
            if weakest.score >= score:
                return released
            others.remove(weakest)
        others.append(_Candidate(index=index, score=score, payload=payload()))
        self._candidates = others
        return released

    def finish(self) -> list[Kept[T]]:
        """Release the last window's candidates (at the end of the stream)."""
        return self._release()

    def _release(self) -> list[Kept[T]]:
        room = self.config.budget - self.kept
        chosen = sorted(self._candidates, key=lambda c: -c.score)[:max(room, 0)]
        chosen.sort(key=lambda c: c.index)
        self._candidates = []
        if chosen:
            self.kept += len(chosen)
            self._last_kept = chosen[-1].index
        return [Kept(index=c.index, score=c.score, payload=c.payload) for c in chosen]
