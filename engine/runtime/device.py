"""Device choice and per-stage timing that does not add host syncs on a GPU."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from engine.errors import BackendError, ConfigError
from engine.types import Stage


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device every stage uses for ``name``: ``auto`` is the first CUDA device when one is present,
    else the CPU.

    Raises:
        ConfigError: ``name`` is not a device name (auto, cpu, cuda, cuda:N).
        BackendError: a CUDA device is asked for where torch sees none, or that many: never a silent
            fall-back to the CPU.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {str(name)!r} asked for, but torch sees no CUDA device; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BackendError(f"device {str(name)!r} does not exist: {torch.cuda.device_count()} CUDA "
                               "device(s); use cuda:0 .. cuda:N-1")
    elif device.type != "cpu":
        raise ConfigError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N")
    return device


class StageClock:
    """Times consecutive stages of one frame.

    On the CPU each ``mark`` reads the wall clock. On CUDA it records an event on the current stream,
    and ``finish`` synchronises once and reads every interval, so timing a frame costs one sync: the
    one that hands the result out.

    ``section(stage)`` moves the time spent inside it from the stage being timed to ``stage``: the
    prompts the pipeline applies to the tracker while fusing are tracker work, and count as "track".
    Stages are ``engine.types.Stage`` values (or their names); any other name is a ValueError.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._t0 = time.perf_counter()
        self._names: list[str] = []
        self._marks: list = []
        self._sections: list[tuple[str, int, object, object]] = []  # (to stage, open stage, start, end)
        self._start = self._now()

    def _now(self):
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _ms(self, start, end) -> float:
        return start.elapsed_time(end) if self._cuda else (end - start) * 1000.0

    def mark(self, stage: Stage | str) -> None:
        """The stage named ``stage`` ends now."""
        self._names.append(Stage.named(stage).value)
        self._marks.append(self._now())

    @contextmanager
    def section(self, stage: Stage | str) -> Iterator[None]:
        stage = Stage.named(stage).value
        start = self._now()
        try:
            yield
        finally:
            self._sections.append((stage, len(self._names), start, self._now()))

    def finish(self) -> tuple[dict[str, float], float]:
        """(milliseconds per stage, total wall milliseconds since the clock started)."""
        if self._cuda and self._marks:
            self._marks[-1].synchronize()
        stages: dict[str, float] = {}
        previous = self._start
        for name, mark in zip(self._names, self._marks):
            stages[name] = stages.get(name, 0.0) + self._ms(previous, mark)
            previous = mark
        for target, open_stage, start, end in self._sections:
            if open_stage < len(self._names):
                moved = self._ms(start, end)
                source = self._names[open_stage]
                stages[source] = max(0.0, stages[source] - moved)
                stages[target] = stages.get(target, 0.0) + moved
        return stages, (time.perf_counter() - self._t0) * 1000.0
