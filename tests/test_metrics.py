import numpy as np
import pytest

from engine.metrics import LatencyHistogram, LatencyTable


@pytest.mark.parametrize("q", [50, 95, 99])
def test_histogram_percentiles_are_within_half_a_percent_of_exact(q):
    samples = np.random.default_rng(1).lognormal(mean=3.0, sigma=0.6, size=20_000)
    hist = LatencyHistogram()
    for s in samples:
        hist.add(s)
    exact = np.percentile(samples, q, method="inverted_cdf")
    assert hist.percentile(q) == pytest.approx(exact, rel=0.005)  # 1% bins, read at their middle
    assert hist.mean == pytest.approx(samples.mean()) and hist.max == pytest.approx(samples.max())


def test_histogram_memory_does_not_grow_with_samples():
    hist = LatencyHistogram()
    before = hist.counts.nbytes
    for i in range(50_000):
        hist.add(i % 97)
    assert hist.counts.nbytes == before and hist.n == 50_000


def test_table_lists_every_stage_and_the_frame_age():
    table = LatencyTable(("decode", "total"))
    table.add({"decode": 1.0, "total": 5.0}, age_ms=9.0)
    assert [row[0] for row in table.rows()] == ["decode", "total", "age"]
    assert "p99" in table.format().splitlines()[0]
