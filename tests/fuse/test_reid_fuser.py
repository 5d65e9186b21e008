"""Re-identification inside the fusion policy: a track lost for longer than ``retire_after`` leaves its
signature in the gallery, and a track spawned later on the same object goes on under the old id
(``Reidentify``), on hand-made frames with a tracker double whose tracks carry embeddings; then on
synthetic scenes where objects leave for 2-5 s, scored by TrackEval."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.eval.reid import ReturningScene, run_fused
from engine.fuse import Fuser, FuserConfig, ReidConfig
from engine.sinks import result_to_record
from engine.types import Detections, Reidentify, Retire, RetireReason, Spawn, Tracks
from tests.doubles import FusionHarness, MaskTracker

H, W = 40, 60
NAMES = ("cat", "dog")
BOX = (10, 10, 25, 25)
FPS = 10.0


class EmbeddingTracker(MaskTracker):
    """``MaskTracker`` whose tracks carry each object's embedding from ``vectors`` (zeros where none)."""

    def __init__(self) -> None:
        super().__init__(H, W)
        self.vectors: dict[int, np.ndarray] = {}

    def _tracks(self, ids: list[int]) -> Tracks:
        tracks = super()._tracks(ids)
        rows = [self.vectors.get(i, np.zeros(4, np.float32)) for i in ids]
        embeddings = torch.tensor(np.array(rows, dtype=np.float32)).reshape(len(ids), 4)
        return dataclasses.replace(tracks, embeddings=embeddings)


def _dets(box=BOX, class_id=0) -> Detections:
    mask = torch.zeros((1, H, W), dtype=torch.bool)
    x1, y1, x2, y2 = box
    mask[0, y1:y2, x1:x2] = True
    return Detections(boxes=torch.tensor([list(map(float, box))]), scores=torch.tensor([0.9]),
                      class_ids=torch.tensor([class_id]), masks=mask, names=NAMES)


def _none() -> Detections:
    return Detections.empty(H, W, names=NAMES)


def _lose_and_return(reid: ReidConfig | None, *, back: np.ndarray, away: int = 6):
    """Object 1 spawns on frame 0 with embedding (1, 0, 0, 0), leaves sight on frame 1 (retired as lost
    after 2 frames), and a detection of the same class comes back ``away`` frames later, its track's
    embedding ``back``. Returns (fuser, tracker, results)."""
    fuser = Fuser(FuserConfig(spawn_after=1, retire_after=2), names=NAMES, reid=reid)
    tracker = EmbeddingTracker()
    harness = FusionHarness(fuser, tracker, names=NAMES)
    tracker.vectors[1] = np.array([1, 0, 0, 0], np.float32)
    results = [harness.step(_dets(), 0, pts=0.0)]
    tracker.hidden.add(1)
    for i in range(1, away):
        results.append(harness.step(_none(), i, pts=i / FPS))
    tracker.vectors[2] = back
    results.append(harness.step(_dets(), away, pts=away / FPS))
    return fuser, tracker, results


def test_a_spawn_that_matches_a_lost_track_goes_on_under_the_old_id_from_its_first_frame():
    fuser, tracker, results = _lose_and_return(ReidConfig(), back=np.array([0.95, 0.1, 0, 0], np.float32))
    assert Retire(1, RetireReason.LOST) in [d for r in results for d in r.decisions]
    last = results[-1]
    spawn, reid = last.decisions
    assert isinstance(spawn, Spawn) and spawn.obj_id == 2
    assert isinstance(reid, Reidentify) and (reid.obj_id, reid.spawned_id) == (1, 2)
    assert reid.similarity == pytest.approx(0.95 / np.hypot(0.95, 0.1), abs=1e-5)
    assert last.instances.ids.tolist() == [1]  # the new id never shows
    assert tracker.object_ids == [1] and 2 in tracker.removed
    assert fuser.counters.reidentified == 1 and list(fuser.tracks) == [1]
    assert result_to_record(last)["decisions"][-1] == {"decision": "reidentify", "id": 1, "spawned": 2,
                                                       "similarity": pytest.approx(reid.similarity, abs=1e-4)}


@pytest.mark.parametrize("reid, back, why", [
    (ReidConfig(), np.array([0, 1, 0, 0], np.float32), "another object"),  # cosine 0
    (None, np.array([1, 0, 0, 0], np.float32), "re-identification off"),
], ids=["dissimilar", "off"])
def test_otherwise_the_spawn_keeps_its_new_id(reid, back, why):
    fuser, _, results = _lose_and_return(reid, back=back)
    assert results[-1].instances.ids.tolist() == [2], why
    assert not any(isinstance(d, Reidentify) for d in results[-1].decisions)


def test_a_users_tracks_neither_enter_the_gallery_nor_take_an_id_from_it():
    """The user removes their object 1; a detection of it later starts a new track: removal is not
    loss. And a user's new object that looks like a lost one keeps the id the user's prompt got."""
    fuser = Fuser(FuserConfig(spawn_after=1, retire_after=2), names=NAMES)
    tracker = EmbeddingTracker()
    harness = FusionHarness(fuser, tracker, names=NAMES)
    e = np.array([1, 0, 0, 0], np.float32)
    tracker.vectors.update({1: e, 2: e, 3: e})
    harness.stream.prompts.track(box=BOX)  # the user's object 1
    harness.step(_none(), 0, pts=0.0)
    harness.stream.prompts.remove(1)
    harness.step(_none(), 1, pts=0.1)
    spawned = harness.step(_dets(), 5, pts=0.5)  # the detector's track 2 on the same object
    assert spawned.instances.ids.tolist() == [2]
    tracker.hidden.add(2)
    for i in range(6, 9):
        harness.step(_none(), i, pts=i / FPS)  # 2 is lost and retired: it is in the gallery now
    assert 2 not in fuser.tracks
    harness.stream.prompts.track(box=BOX)  # the user prompts the object: it stays the user's id 3
    result = harness.step(_none(), 12, pts=1.2)
    assert result.instances.ids.tolist() == [3]
    assert not any(isinstance(d, Reidentify) for d in result.decisions)


# ------------------------------------------------------------------ on ground truth

@pytest.fixture(scope="module")
def fused():
    """One returning scene (objects away 2-5 s, look-alikes entering meanwhile) through the engine's
    fuser with the gallery and without it."""
    scene = ReturningScene(seed=0, frames=200, width=160, height=120, objects=8, fps=10)
    return run_fused(scene, ReidConfig()), run_fused(scene, None)


@pytest.mark.slow
def test_the_engines_gallery_recovers_returning_objects_without_false_ids(fused):
    on, off = fused
    c = on.counts
    log = "\n".join(on.log)
    assert c.returns >= 4, log  # objects really were retired and came back
    assert c.recovered / c.returns >= 0.9, log
    assert c.false / c.queries <= 0.02, log
    assert off.after.predicted_ids > on.after.predicted_ids >= on.after.gt_objects
    assert on.after.idf1 > off.after.idf1 + 0.05 and on.after.hota > off.after.hota
