"""Budget-driven degradation: a stream whose frames arrive older than its latency budget gives up
quality, one documented level at a time, and takes it back once there is headroom.

The ladder (``default_levels``), from full quality down; a level only lists what the stream has:

    level 0   everything on every frame
    level 1   detector every 2nd frame, semantic layer every 2nd     (the tracker carries the frames between)
    level 2   detector every 4th frame, semantic layer every 4th
    level 3   as 2, and at most 16 tracked objects (lowest scores dropped first)
    level 4   detector every 8th frame, semantic layer every 16th, at most 8 tracked objects

Without a tracker the detector must see every frame (nothing carries the frames between), so the
detector steps are left out; a stream with neither a tracker nor a semantic layer has only level 0,
and an impossible budget is then reported, not degraded (the multi-stream loop's budget still drops
late frames). The tracker's image size is not a level: SAM 2's memory bank holds features at one
resolution, so changing it means restarting the stream's memory, which loses its track ids.

The controller (``DegradeController``) watches the 90th percentile of frame age over the last
``window_s`` seconds, so one slow frame does not count, and acts with hysteresis:

- over ``budget * over_fraction`` for ``down_after_s`` seconds: one level down;
- under ``budget * under_fraction`` for ``up_after_s`` seconds: one level up;
- in between: hold. After every change the window restarts, so the new level is judged on its own
  frames; at the lowest level, staying over the budget is reported once (``CANNOT_HOLD``).

It is pure logic over an injectable clock: the pipeline feeds it each result's age and applies the
returned event's ``quality``; tests drive it with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class QualityLevel:
    """What a stream runs at one level of the ladder."""

    detect_every: int = 1  # the detector on every k-th frame; the tracker carries the frames between
    semantic_every: int = 1  # the semantic (stuff) layer on every k-th frame
    max_tracked_objects: int | None = None  # tracked objects kept, highest score first; None: no cap

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.semantic_every < 1:
            raise ConfigError(f"a quality level runs stages every k >= 1 frames, got detect_every="
                              f"{self.detect_every}, semantic_every={self.semantic_every}")
        if self.max_tracked_objects is not None and self.max_tracked_objects < 1:
            raise ConfigError(f"max_tracked_objects must be >= 1 or None, got {self.max_tracked_objects}")

    def as_record(self) -> dict:
        return {"detect_every": self.detect_every, "semantic_every": self.semantic_every,
                "max_tracked_objects": self.max_tracked_objects}


def default_levels(*, tracker: bool, semantic: bool) -> tuple[QualityLevel, ...]:
    """The documented ladder (module docstring), keeping only the steps that change something here.

    Not tuned on a benchmark: each detector step halves the detector's share of a frame, and the object
    caps bound the tracker's, whose per-frame cost grows with the number of objects it propagates.
    """
    ladder = [QualityLevel()]
    steps = [(2, 2, None), (4, 4, None), (4, 8, 16), (8, 16, 8)]
    for detect_every, semantic_every, max_objects in steps:
        level = QualityLevel(detect_every=detect_every if tracker else 1,
                             semantic_every=semantic_every if semantic else 1,
                             max_tracked_objects=max_objects if tracker else None)
        if level != ladder[-1]:
            ladder.append(level)
    return tuple(ladder)


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """A stream's latency budget and how eagerly the controller acts on it."""

    budget_ms: float | None = None  # frame age allowed (capture to result); None turns degradation off
    over_fraction: float = 1.0  # the window's p90 age above budget * this is over budget
    # Below budget * this counts as headroom. A step up at the first levels doubles the detector's
    # share, so anything less than ~2x headroom would step straight back down.
    under_fraction: float = 0.5
    down_after_s: float = 2.0  # over budget this long, continuously: one level down
    up_after_s: float = 10.0  # headroom this long, continuously: one level up (slower: no flapping)
    window_s: float = 1.0  # the age statistic is the 90th percentile over this many seconds
    levels: tuple[QualityLevel, ...] = default_levels(tracker=True, semantic=False)

    def __post_init__(self) -> None:
        if self.budget_ms is not None and not (self.budget_ms > 0 and math.isfinite(self.budget_ms)):
            raise ConfigError(f"the latency budget must be a positive number of ms, got {self.budget_ms}")
        if not 0 < self.under_fraction < self.over_fraction:
            raise ConfigError(f"degradation needs 0 < under_fraction < over_fraction (a band to hold in), "
                              f"got {self.under_fraction} and {self.over_fraction}")
        if min(self.down_after_s, self.up_after_s, self.window_s) <= 0:
            raise ConfigError(f"down_after_s, up_after_s and window_s must be > 0, got {self.down_after_s}, "
                              f"{self.up_after_s}, {self.window_s}")
        if not self.levels or self.levels[0] != QualityLevel():
            raise ConfigError("the first quality level must be full quality, QualityLevel()")


class DegradeKind(str, Enum):
    STEP_DOWN = "step_down"  # over budget: one level less quality
    STEP_UP = "step_up"  # headroom (or the budget removed): one level more
    CANNOT_HOLD = "cannot_hold"  # over budget at the lowest level: nothing left to give up


@dataclass(frozen=True, slots=True)
class DegradeEvent:
    """One decision of a stream's controller: log it, count it, put it in the stream's results."""

    stream: str
    kind: DegradeKind
    level: int  # the level in force after the event (0 = full quality)
    previous: int  # the level before
    quality: QualityLevel  # what the stream runs from now on
    age_ms: float  # the window's p90 frame age that triggered it
    budget_ms: float | None
    time: float  # the controller's clock, seconds

    def as_record(self) -> dict:
        """JSON-ready, for a results line or an API answer."""
        return {"kind": self.kind.value, "level": self.level, "previous": self.previous,
                "quality": self.quality.as_record(), "age_ms": round(self.age_ms, 3),
                "budget_ms": self.budget_ms}

    def message(self) -> str:
        """One log line."""
        if self.kind is DegradeKind.CANNOT_HOLD:
            return (f"stream {self.stream}: frame age p90 {self.age_ms:.0f} ms is over its budget of "
                    f"{self.budget_ms:.0f} ms at the lowest quality level ({self.level}); add capacity or "
                    f"raise the budget")
        budget = "no budget" if self.budget_ms is None else f"budget {self.budget_ms:.0f} ms"
        q = self.quality
        return (f"stream {self.stream}: quality level {self.previous} -> {self.level} (frame age p90 "
                f"{self.age_ms:.0f} ms, {budget}): detector every {q.detect_every}, semantic every "
                f"{q.semantic_every}, tracked objects {q.max_tracked_objects or 'all'}")


_MAX_SAMPLES = 4096  # bounds the window at any frame rate (4096 samples is 1 s at 4 kHz)


class DegradeController:
    """One stream's controller; see the module docstring. Not thread-safe: one stream, one caller.

    Args:
        stream: the stream's name, carried by its events.
        config: the budget and thresholds.
        clock: seconds, monotonic; ``time.monotonic`` unless a test injects a fake one.
    """

    def __init__(self, stream: str, config: DegradeConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.config = config
        self.clock = clock
        self.level = 0
        self._window: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)  # (time, age ms)
        self._over_since: float | None = None
        self._under_since: float | None = None
        self._cannot_hold_reported = False

    @property
    def quality(self) -> QualityLevel:
        return self.config.levels[self.level]

    def observe(self, age_ms: float) -> DegradeEvent | None:
        """Feed one frame's age (or its processing total) in ms; returns the event when this frame
        changes the level or shows that the budget cannot be held, None otherwise."""
        budget = self.config.budget_ms
        if budget is None:
            return None
        now = self.clock()
        self._window.append((now, float(age_ms)))
        while self._window and self._window[0][0] < now - self.config.window_s:
            self._window.popleft()
        p90 = _p90([a for _, a in self._window])
        over, under = p90 > budget * self.config.over_fraction, p90 < budget * self.config.under_fraction
        self._over_since = (self._over_since if self._over_since is not None else now) if over else None
        self._under_since = (self._under_since if self._under_since is not None else now) if under else None
        if not over:
            self._cannot_hold_reported = False
        if over and now - self._over_since >= self.config.down_after_s:
            if self.level + 1 < len(self.config.levels):
                return self._change(self.level + 1, DegradeKind.STEP_DOWN, p90, now)
            if not self._cannot_hold_reported:
                self._cannot_hold_reported = True
                return self._event(DegradeKind.CANNOT_HOLD, self.level, p90, now)
        if under and self.level > 0 and now - self._under_since >= self.config.up_after_s:
            return self._change(self.level - 1, DegradeKind.STEP_UP, p90, now)
        return None

    def set_budget(self, budget_ms: float | None) -> DegradeEvent | None:
        """Change the budget at run time (the control API). The window restarts; without a budget the
        stream returns to full quality at once (the event says so)."""
        self.config = replace(self.config, budget_ms=budget_ms)
        self._restart_window()
        if budget_ms is None and self.level > 0:
            return self._change(0, DegradeKind.STEP_UP, 0.0, self.clock())
        return None

    def _change(self, level: int, kind: DegradeKind, age_ms: float, now: float) -> DegradeEvent:
        previous, self.level = self.level, level
        self._restart_window()
        return self._event(kind, previous, age_ms, now)

    def _event(self, kind: DegradeKind, previous: int, age_ms: float, now: float) -> DegradeEvent:
        return DegradeEvent(stream=self.stream, kind=kind, level=self.level, previous=previous,
                            quality=self.quality, age_ms=age_ms, budget_ms=self.config.budget_ms, time=now)

    def _restart_window(self) -> None:
        self._window.clear()
        self._over_since = self._under_since = None
        self._cannot_hold_reported = False


def _p90(values: list[float]) -> float:
    """The 90th percentile, nearest rank (an observed age, never an interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
