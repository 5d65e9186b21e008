"""The selection benchmark's command line refuses settings it cannot run before any work starts; every arm
labels the same number of frames, chosen from the same cameras, and the held-out cameras are never collected."""

from __future__ import annotations

import pytest

from benchmarks import selection


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "give 1 or more workers"),
    (["--budget", "85"], "a budget from 1 to 84 frames (the pool's 6 cameras keep at most 14 each)"),
    (["--pool", "loop", "--budget", "43"], "a budget from 1 to 42 frames"),
    (["--seeds", "1", "1"], "distinct seeds"),
    (["--pool", "street"], "invalid choice: 'street'"),
])
def test_settings_it_cannot_run_are_refused_in_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(selection, "loop_weights", lambda: type("W", (), {"present": True})())
    monkeypatch.setattr(selection, "run", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as stop:
        selection.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not any("Traceback" in line for line in err)


@pytest.mark.parametrize("pool", sorted(selection.POOLS))
def test_every_arm_draws_the_same_budget_from_cameras_it_is_not_scored_on(pool):
    settings = selection.SelectionSettings(pool=pool)
    assert settings.per_camera * settings.spacing <= settings.train_frames  # the selector accepts it
    assert settings.budget <= settings.per_camera * len(settings.cameras)
    assert set(selection._arms(settings)) == {"uncertainty", *(f"random-{s}" for s in settings.seeds)}
    assert not {c.name for c in settings.cameras} & {c.name for c in settings.held_out}
    kinds = sorted({c.objects for c in settings.cameras})
    assert kinds == sorted({c.objects for c in settings.held_out})  # scored on the kinds of camera it drew from
    assert max(kinds) <= settings.max_tracks  # every object of the busiest camera can get a track


def test_paired_runs_compare_the_same_fine_tune_seed():
    settings = selection.SelectionSettings(seeds=(0, 1, 2))
    runs = {f"uncertainty/seed{s}": {"mean": m} for s, m in zip((0, 1, 2), (0.70, 0.72, 0.69))}
    runs |= {f"random/seed{s}": {"mean": m} for s, m in zip((0, 1, 2), (0.68, 0.73, 0.66))}
    out = selection.summarise(settings, runs)
    assert out["uncertainty"]["runs"] == [0.70, 0.72, 0.69] and out["random"]["mean"] == pytest.approx(0.69)
    assert out["paired"]["mean"] == pytest.approx((0.02 - 0.01 + 0.03) / 3)
    assert (out["paired"]["uncertainty_ahead"], out["paired"]["pairs"]) == (2, 3)


def test_a_finished_run_prints_both_arms_the_pairs_and_where_the_budget_went(tmp_path, capsys, monkeypatch):
    settings = selection.SelectionSettings(seeds=(0, 1))
    runs = {f"{kind}/seed{s}": {"mean": m} for kind, ms in (("uncertainty", (0.72, 0.71)), ("random", (0.70, 0.72)))
            for s, m in zip((0, 1), ms)}
    frames = {cam.name: 0 for cam in settings.cameras}
    record = {"before": {"mean": 0.65}, "total": {"wall_s": 1.0},
              "chosen": {"uncertainty": {"frames": frames, "objects": 148}, "random-0": {"frames": frames, "objects": 109},
                         "random-1": {"frames": frames, "objects": 126}}} | selection.summarise(settings, runs)
    monkeypatch.setattr(selection, "loop_weights", lambda: type("W", (), {"present": True})())
    monkeypatch.setattr(selection, "run", lambda *a, **k: dict(record))
    assert selection.main(["--seeds", "0", "1", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "start 0.650" in out and "uncertainty  0.715 +- 0.007" in out and "random       0.710 +- 0.014" in out
    assert "uncertainty - random +0.005 +- 0.021, ahead in 1 of 2" in out
    assert "148 objects labelled (random: 109, 126)" in out and (tmp_path / "r.json").is_file()


def test_an_arm_whose_collectors_kept_fewer_frames_than_the_budget_stops_the_run(tmp_path, monkeypatch):
    """The spacing can leave an arm fewer candidates than the ceiling: it must not label fewer frames."""
    settings = selection.SelectionSettings(seeds=(0,), budget=30)

    def kept(settings, jobs):  # each camera's collectors kept 4 frames (uncertainty) or 6 (random)
        for cam in settings.cameras:
            for arm, count in (("uncertainty", 4), ("random-0", 6)):
                folder = tmp_path / "parts" / f"{arm}-{cam.name}"
                folder.mkdir(parents=True)
                (folder / "collection.jsonl").write_text("{}\n" * count)

    monkeypatch.setattr(selection, "in_rounds", kept)
    with pytest.raises(SystemExit, match="the uncertainty arm's collectors kept 24 frames over the cameras, "
                                         "fewer than --budget 30: give a budget of at most 24"):
        selection.collect(settings, tmp_path)
