"""Device choice and per-stage timing that does not add host syncs on a GPU."""

from __future__ import annotations

import time

import torch

from engine.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA device when one is present, else the CPU. Asking for CUDA where none
    is present is a ConfigError, not a silent fall-back."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device; use --device cpu")
    return device


class StageClock:
    """Times consecutive stages of one frame.

    On the CPU each ``mark`` reads the wall clock. On CUDA it records an event on the current stream,
    and ``finish`` synchronises once and reads every interval, so timing a frame costs one sync: the
    one that hands the result out.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._t0 = time.perf_counter()
        self._names: list[str] = []
        self._marks: list = []
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()

    def mark(self, stage: str) -> None:
        """The stage named ``stage`` ends now."""
        self._names.append(stage)
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def finish(self) -> tuple[dict[str, float], float]:
        """(milliseconds per stage, total wall milliseconds since the clock started)."""
        stages: dict[str, float] = {}
        if self._cuda:
            if self._marks:
                self._marks[-1].synchronize()
            previous = self._start
            for name, event in zip(self._names, self._marks):
                stages[name] = stages.get(name, 0.0) + previous.elapsed_time(event)
                previous = event
        else:
            previous = self._t0
            for name, t in zip(self._names, self._marks):
                stages[name] = stages.get(name, 0.0) + (t - previous) * 1000.0
                previous = t
        return stages, (time.perf_counter() - self._t0) * 1000.0
