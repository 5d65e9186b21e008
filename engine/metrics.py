"""Latency percentiles over streams of any length, in bounded memory."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from engine.types import STAGE_NAMES, TIMING_KEYS, StageTimes

# Log-spaced bins from 1 µs to ~17 min with 1% steps: a percentile read from them is within 0.5% of
# the exact value, and the table never grows with the stream.
_LO_MS, _RATIO = 1e-3, 1.01
_BINS = int(math.ceil(math.log(1e6 / _LO_MS) / math.log(_RATIO))) + 1


class LatencyHistogram:
    """Counts of observed milliseconds; percentiles, mean and max without storing the samples."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BINS, dtype=np.int64)
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        ms = max(float(ms), 0.0)
        b = 0 if ms <= _LO_MS else min(_BINS - 1, int(math.log(ms / _LO_MS) / math.log(_RATIO)) + 1)
        self.counts[b] += 1
        self.n += 1
        self.total += ms
        self.max = max(self.max, ms)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) in ms; the geometric middle of its bin, capped at the max seen."""
        if self.n == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.n))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        if b == 0:
            return min(_LO_MS, self.max)
        return min(_LO_MS * _RATIO ** (b - 0.5), self.max)


class LatencyTable:
    """One histogram per timing key plus frame age; prints the summary table of a run.

    Args:
        keys: the rows, by default every stage of ``engine.types.Stage`` and ``total``.
    """

    def __init__(self, keys: tuple[str, ...] = TIMING_KEYS) -> None:
        self.stages = tuple(keys)
        self.histograms = {name: LatencyHistogram() for name in (*self.stages, "age")}

    def add(self, times: StageTimes | Mapping[str, float], age_ms: float) -> None:
        """One frame's times; a mapping must name only this table's keys (ValueError otherwise)."""
        if isinstance(times, StageTimes):
            times = {**dict(zip(STAGE_NAMES, times.ms)), "total": times.total, "overlapped": times.overlapped}
        else:
            unknown = set(times) - set(self.stages)
            if unknown:
                raise ValueError(f"unknown timing keys {sorted(unknown)}; this table has {', '.join(self.stages)}")
        for name in self.stages:
            self.histograms[name].add(times.get(name, 0.0))
        self.histograms["age"].add(age_ms)

    def rows(self) -> list[tuple[str, float, float, float, float, float]]:
        """(stage, mean, p50, p95, p99, max) in ms for every stage and the frame age."""
        return [(name, h.mean, h.percentile(50), h.percentile(95), h.percentile(99), h.max)
                for name, h in self.histograms.items()]

    def format(self) -> str:
        lines = [f"{'stage':<11}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}   (ms)"]
        for name, mean, p50, p95, p99, mx in self.rows():
            if name == "overlapped" and mx == 0.0:
                continue  # a serial run: nothing ran beside another frame
            lines.append(f"{name:<11}{mean:>9.2f}{p50:>9.2f}{p95:>9.2f}{p99:>9.2f}{mx:>9.2f}")
        return "\n".join(lines)
