"""Networks for the served fleet's tests: a detector double that costs what it is told to, and the mask
tracker double, behind the interface ``LocalFleet`` loads networks through (``engine.app.SharedModels``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import torch

from engine.eval.doubles import MaskTracker
from engine.options import RunOptions
from engine.processor import SharedStages
from tests.doubles import SquareDetector


class SlowDetector(SquareDetector):
    """``SquareDetector`` taking ``delay_s`` per call, as a network does."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        time.sleep(self.delay_s)
        return super().__call__(images)


@dataclass
class DoubleModels:
    """What ``engine.app.load_models`` returns, with doubles: a tracker per stream when ``tracker``."""

    detector: SlowDetector
    tracker: bool = False
    height: int = 48
    width: int = 64
    device: torch.device = torch.device("cpu")
    random_weights: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def shared(self) -> SharedStages:
        return SharedStages(detector=self.detector)

    def tracker_for_stream(self):
        return MaskTracker(self.height, self.width) if self.tracker else None


def loader(*, delay_s: float = 0.0, tracker: bool = False, loads: list | None = None):
    """A ``LocalFleet(load=...)`` that builds ``DoubleModels``; ``loads`` collects the options it saw."""
    def load(options: RunOptions) -> DoubleModels:
        if loads is not None:
            loads.append(options)
        return DoubleModels(detector=SlowDetector(delay_s), tracker=tracker)
    return load


def call(url: str, method: str = "GET", body: object = None, *, token: str | None = None,
         raw: bytes | None = None) -> tuple[int, dict]:
    """One real HTTP request; (status, JSON body)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(condition, timeout_s: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.05)
    return value
