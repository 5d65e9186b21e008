"""Budget-driven degradation on a fake clock: a stream whose cost falls as its quality level falls."""

from __future__ import annotations

import itertools

import pytest

from engine.errors import ConfigError
from engine.fleet.degrade import (
    DegradeConfig,
    DegradeController,
    DegradeEvent,
    DegradeKind,
    QualityLevel,
    default_levels,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowedStream:
    """A stream whose frames come out ``cost_ms[level]`` old: a pipeline too slow for its budget at full
    quality, faster at each level down. Frames arrive every 1/30 s of fake time, or slower when a frame
    takes longer than that (the stream cannot go faster than it computes)."""

    COST_MS = (400.0, 260.0, 170.0, 140.0, 110.0)

    def __init__(self, controller: DegradeController, clock: FakeClock) -> None:
        self.controller = controller
        self.clock = clock
        self.events: list[DegradeEvent] = []
        self.levels_seen: list[int] = []

    def run(self, seconds: float) -> list[DegradeEvent]:
        events, end = [], self.clock.now + seconds
        while self.clock.now < end:
            cost = self.COST_MS[self.controller.level]
            self.clock.now += max(cost, 1000 / 30) / 1000
            jitter = 15.0 if int(self.clock.now * 30) % 7 == 0 else 0.0  # an occasional slow frame
            event = self.controller.observe(cost + jitter)
            self.levels_seen.append(self.controller.level)
            if event is not None:
                events.append(event)
        self.events += events
        return events


def _stream(budget_ms: float | None, **options) -> SlowedStream:
    clock = FakeClock()
    return SlowedStream(DegradeController("cam1", DegradeConfig(budget_ms=budget_ms, **options), clock=clock), clock)


def test_an_impossible_budget_steps_down_every_level_then_says_it_cannot_hold():
    stream = _stream(50.0)
    events = stream.run(60.0)
    kinds = [e.kind for e in events]
    assert kinds == [DegradeKind.STEP_DOWN] * 4 + [DegradeKind.CANNOT_HOLD]  # reported once, not per frame
    assert [(e.previous, e.level) for e in events[:4]] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert events[-1].level == 4 and events[-1].age_ms > 50.0
    assert "add capacity or raise the budget" in events[-1].message()
    # every step waited the dwell time after the previous one: the new level was judged on its own frames
    gaps = [b.time - a.time for a, b in itertools.pairwise(events)]
    assert all(gap >= 2.0 for gap in gaps)
    assert events[0].quality == QualityLevel(detect_every=2)


def test_relaxing_the_budget_steps_back_up_slowly_to_full_quality():
    stream = _stream(50.0)
    stream.run(60.0)
    assert stream.controller.level == 4
    assert stream.controller.set_budget(2000.0) is None  # nothing changes at once: headroom must last
    events = stream.run(120.0)
    assert [(e.kind, e.previous, e.level) for e in events] == [
        (DegradeKind.STEP_UP, 4, 3), (DegradeKind.STEP_UP, 3, 2), (DegradeKind.STEP_UP, 2, 1),
        (DegradeKind.STEP_UP, 1, 0)]
    assert all(b.time - a.time >= 10.0 for a, b in itertools.pairwise(events))  # up_after_s: slower than down
    assert stream.controller.quality == QualityLevel()


def test_a_budget_within_reach_is_held_at_the_first_level_that_fits_without_flapping():
    stream = _stream(200.0)  # level 2 costs 170 ms: inside (100, 200], the band where it holds
    events = stream.run(120.0)
    assert [(e.previous, e.level) for e in events] == [(0, 1), (1, 2)]
    assert set(stream.levels_seen[-500:]) == {2}  # the last ~85 s of fake time


def test_one_slow_frame_is_not_a_trend():
    clock = FakeClock()
    ctl = DegradeController("cam1", DegradeConfig(budget_ms=100.0), clock=clock)
    for i in range(30 * 20):  # 20 s at 30 fps, one 5 s stall (a reconnect) every 2 s of frames
        clock.now += 1 / 30
        assert ctl.observe(5000.0 if i % 60 == 0 else 40.0) is None
    assert ctl.level == 0


def test_without_a_budget_nothing_ever_changes():
    stream = _stream(None)
    assert stream.run(60.0) == [] and set(stream.levels_seen) == {0}


def test_removing_the_budget_returns_to_full_quality_at_once_and_says_so():
    stream = _stream(50.0)
    stream.run(10.0)
    level = stream.controller.level
    assert level > 0
    event = stream.controller.set_budget(None)
    assert (event.kind, event.previous, event.level, event.budget_ms) == (DegradeKind.STEP_UP, level, 0, None)
    assert stream.run(30.0) == []


def test_an_event_is_a_json_ready_record():
    stream = _stream(50.0)
    record = stream.run(10.0)[0].as_record()
    assert record == {"kind": "step_down", "level": 1, "previous": 0,
                      "quality": {"detect_every": 2, "semantic_every": 1, "max_tracked_objects": None},
                      "age_ms": record["age_ms"], "budget_ms": 50.0}


@pytest.mark.parametrize(("tracker", "semantic", "expected"), [
    # the detector alone must see every frame: no level can help, so the ladder is level 0 only
    pytest.param(False, False, (QualityLevel(),), id="detector-only"),
    pytest.param(False, True, (QualityLevel(), QualityLevel(semantic_every=2), QualityLevel(semantic_every=4),
                               QualityLevel(semantic_every=8), QualityLevel(semantic_every=16)), id="semantic-only"),
    pytest.param(True, False, (QualityLevel(), QualityLevel(detect_every=2), QualityLevel(detect_every=4),
                               QualityLevel(detect_every=4, max_tracked_objects=16),
                               QualityLevel(detect_every=8, max_tracked_objects=8)), id="tracker"),
])
def test_the_ladder_lists_only_what_the_stream_has(tracker, semantic, expected):
    assert default_levels(tracker=tracker, semantic=semantic) == expected


def test_a_stream_with_nothing_to_give_up_reports_at_once():
    clock = FakeClock()
    ctl = DegradeController("cam1", DegradeConfig(budget_ms=50.0, levels=default_levels(tracker=False, semantic=False)),
                            clock=clock)
    events = []
    for _ in range(90):
        clock.now += 1 / 30
        events += [e for e in [ctl.observe(80.0)] if e is not None]
    assert [e.kind for e in events] == [DegradeKind.CANNOT_HOLD] and ctl.level == 0


@pytest.mark.parametrize(("options", "message"), [
    pytest.param({"budget_ms": 0}, "positive number of ms", id="zero-budget"),
    pytest.param({"budget_ms": float("inf")}, "positive number of ms", id="infinite-budget"),
    pytest.param({"budget_ms": 100, "under_fraction": 1.0}, "a band to hold in", id="no-hysteresis-band"),
    pytest.param({"budget_ms": 100, "down_after_s": 0}, "must be > 0", id="no-dwell"),
    pytest.param({"levels": ()}, "first quality level must be full quality", id="no-levels"),
    pytest.param({"levels": (QualityLevel(detect_every=2),)}, "first quality level", id="degraded-first-level"),
])
def test_bad_settings_are_one_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        DegradeConfig(**options)


def test_a_level_must_run_its_stages_at_all():
    with pytest.raises(ConfigError, match="every k >= 1"):
        QualityLevel(detect_every=0)
