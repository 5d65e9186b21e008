"""The frame selector: top-k per window, minimum spacing, budget, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import FrameSelector, SelectorConfig
from engine.errors import ConfigError


def _run(config: SelectorConfig, scores: dict[int, float], frames: int) -> list[int]:
    selector: FrameSelector[int] = FrameSelector(config)
    kept = []
    for i in range(frames):
        kept += [k.index for k in selector.offer(i, scores.get(i, 0.0), lambda i=i: i)]
    return kept + [k.index for k in selector.finish()]


def _exact(config: SelectorConfig, scores: np.ndarray) -> list[int]:
    """Brute force for isolated peaks: per window, the best frames, greedy by score, spacing respected."""
    kept: list[int] = []
    for start in range(0, len(scores), config.window):
        chosen: list[int] = []
        for i in sorted(range(start, min(start + config.window, len(scores))), key=lambda i: -scores[i]):
            if len(chosen) < config.per_window and all(abs(i - j) >= config.min_spacing for j in chosen + kept):
                chosen.append(i)  # in order of score
        kept += sorted(chosen[:config.budget - len(kept)])  # at the budget, the window's best ones
    return kept


def test_keeps_the_top_k_of_each_window():
    cfg = SelectorConfig(window=10, per_window=2, min_spacing=1, budget=100)
    scores = {1: 0.2, 3: 0.9, 7: 0.5, 12: 0.1, 15: 0.3, 18: 0.8}
    assert _run(cfg, scores, 20) == [3, 7, 15, 18]


def test_frames_closer_than_the_spacing_are_not_both_kept():
    cfg = SelectorConfig(window=20, per_window=3, min_spacing=5, budget=100)
    scores = {2: 0.5, 4: 0.9, 6: 0.6, 12: 0.4}  # 2 and 6 are within 5 frames of 4, the best
    assert _run(cfg, scores, 20) == [4, 12]


def test_spacing_holds_across_a_window_boundary():
    cfg = SelectorConfig(window=10, per_window=1, min_spacing=4, budget=100)
    assert _run(cfg, {9: 0.9, 11: 0.95, 15: 0.1}, 20) == [9, 15]


def test_the_budget_stops_keeping():
    cfg = SelectorConfig(window=10, per_window=2, min_spacing=1, budget=3)
    scores = {i: 0.5 + 0.01 * i for i in range(0, 60, 3)}
    kept = _run(cfg, scores, 60)
    assert len(kept) == 3 and kept == [6, 9, 18]  # window 0 gives two, window 1 its best one


def test_frames_at_or_below_min_score_are_never_kept():
    cfg = SelectorConfig(window=10, per_window=3, min_spacing=1, budget=100, min_score=0.5)
    assert _run(cfg, {1: 0.49, 2: 0.5, 3: 0.51, 5: 0.9, 7: float("nan")}, 10) == [3, 5]
    # frames with nothing uncertain (score 0) are not worth a label even with room left
    assert _run(SelectorConfig(window=10, per_window=3, min_spacing=1), {4: 0.2}, 10) == [4]


def test_matches_exact_selection_on_isolated_peaks():
    """When candidates never suppress each other transitively, the greedy stream equals the exact answer."""
    rng = np.random.default_rng(0)
    cfg = SelectorConfig(window=50, per_window=3, min_spacing=5, budget=40)
    scores = np.zeros(1000)
    peaks = rng.choice(np.arange(0, 1000, 6), size=120, replace=False)  # peaks at least 6 apart
    scores[peaks] = rng.uniform(0.1, 1.0, size=peaks.size)
    assert _run(cfg, dict(enumerate(scores)), 1000) == _exact(cfg, scores)


def test_payload_is_built_only_for_candidates():
    built = []
    selector: FrameSelector[int] = FrameSelector(SelectorConfig(window=100, per_window=1, min_spacing=1, budget=9))
    for i, s in enumerate([0.9, 0.1, 0.2, 0.95, 0.3]):
        selector.offer(i, s, lambda i=i: built.append(i) or i)
    assert built == [0, 3]


def test_memory_is_bounded_by_per_window():
    rng = np.random.default_rng(1)
    cfg = SelectorConfig(window=500, per_window=4, min_spacing=2, budget=10_000)
    selector: FrameSelector[int] = FrameSelector(cfg)
    most = 0
    for i in range(20_000):
        selector.offer(i, float(rng.random()), lambda i=i: i)
        most = max(most, selector.held)
    assert most == cfg.per_window


def test_indices_must_increase():
    selector: FrameSelector[int] = FrameSelector(SelectorConfig(window=10, per_window=1, min_spacing=1))
    selector.offer(5, 0.5, lambda: 5)
    with pytest.raises(ValueError, match="increase"):
        selector.offer(5, 0.5, lambda: 5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 0}, "window"),  # no window
    ({"per_window": 0}, "per_window"),  # keeps nothing
    ({"budget": 0}, "budget"),  # no budget
    ({"min_spacing": -1}, "min_spacing"),  # negative spacing
    ({"window": 10, "per_window": 3, "min_spacing": 5}, "apart"),  # 3 frames 5 apart cannot fit in 10
])
def test_bad_selector_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SelectorConfig(**kwargs)
