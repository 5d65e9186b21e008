"""The selection benchmark's command line refuses settings it cannot run before any work starts, and its
collectors rank whole scenes (the ranking picks the moments, not a frame within each second)."""

from __future__ import annotations

import pytest

from benchmarks import selection


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "--workers 0"),
    (["--per-scene", "15"], "at most 14 frames a scene"),
])
def test_settings_it_cannot_run_are_refused_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(selection, "loop_weights", lambda: type("W", (), {"present": True})())
    monkeypatch.setattr(selection, "run", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as stop:
        selection.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)


def test_every_arm_keeps_the_same_number_of_frames_from_one_window_per_scene():
    settings = selection.SelectionSettings()
    assert settings.budget == settings.per_scene * len(selection.TRAIN_SEEDS)
    assert settings.per_scene * settings.spacing <= settings.train_frames  # the selector accepts it
    assert set(selection._arms(settings)) == {"uncertainty", *(f"random-{s}" for s in settings.seeds)}
