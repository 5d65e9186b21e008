"""benchmarks/memory_soak.py builds the engine it describes: a few seconds of the soak hold exactly the
prompted objects in the tracker's memory bank on every sample; the figure's estimator (the level RSS
returns to) tells memory the allocator holds and hands back from a leak."""

from __future__ import annotations

import pytest

from benchmarks.memory_soak import Sample, envelope_slope_mib_per_10min, return_slope_mib_per_10min, soak


@pytest.mark.slow
def test_a_short_soak_tracks_the_prompted_objects_throughout() -> None:
    report = soak(minutes=0.15, warmup_minutes=0.0, objects=3, size="320x240", tracker_size=128,
                  sample_s=0.5, window_s=2.0)
    assert report["frames"] >= 2
    assert {s["tracks"] for s in report["samples"]} == {3}
    assert report["tracker_mib_max"] > 0 and report["rss_max_mib"] >= report["rss_fit_start_mib"] > 0


def _series(levels: list[tuple[float, float]]) -> list[Sample]:
    return [Sample(t_s=t, frames=int(t), rss_mib=r, tracker_mib=1.0, tracks=1) for t, r in levels]


def test_memory_held_and_handed_back_is_not_a_leak_but_a_rising_return_level_is() -> None:
    # 30 minutes: the allocator holds 30-60 MiB above a floor for stretches, returning to it 4 times
    held = [(t, 1400.0 + t / 60 if (t // 300) % 2 else 1368.0) for t in range(0, 1800, 10)]
    assert return_slope_mib_per_10min(_series(held), after_s=180) == pytest.approx(0.0, abs=1e-6)
    assert envelope_slope_mib_per_10min(_series(held), after_s=180) > 1.0  # windows inside held stretches
    leaking = [(t, r + 5.0 * t / 600) for t, r in held]  # the same, plus 5 MiB per 10 minutes never returned
    assert return_slope_mib_per_10min(_series(leaking), after_s=180) == pytest.approx(5.0, rel=1e-6)
    assert return_slope_mib_per_10min(_series(held[:40]), after_s=180) is None  # one return: cannot tell
