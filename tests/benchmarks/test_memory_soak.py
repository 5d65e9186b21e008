"""benchmarks/memory_soak.py builds the engine it describes: a few seconds of the soak hold exactly the
prompted objects in the tracker's memory bank on every sample, and the report carries its slopes."""

from __future__ import annotations

import pytest

from benchmarks.memory_soak import soak


@pytest.mark.slow
def test_a_short_soak_tracks_the_prompted_objects_throughout() -> None:
    report = soak(minutes=0.15, warmup_minutes=0.0, objects=3, size="320x240", tracker_size=128,
                  sample_s=0.5, window_s=2.0)
    assert report["frames"] >= 2
    assert {s["tracks"] for s in report["samples"]} == {3}
    assert report["tracker_mib_max"] > 0 and report["rss_max_mib"] >= report["rss_fit_start_mib"] > 0
