"""``streamseg eval``'s panoptic scores from a results JSONL: a file written by the engine's own sinks from
the scene's exact truth scores 1 everywhere, and injected faults (stuff relabelled, ids swapped) lower
mIoU, PQ and STQ to the values the definitions give, computed here from pixel counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import SourceError
from engine.eval.scene_panoptic import evaluate_panoptic, read_panoptic_records
from engine.fuse import PanopticFusion
from engine.sinks import JsonlWriter
from engine.sources.synthetic import CLASS_NAMES, STUFF_NAMES, SyntheticScene
from engine.types import Frame, FrameResult, Instances, SemanticMap, StageTimes

FRAMES, SWAP_FROM = 6, 3
NAMES = (*STUFF_NAMES, *CLASS_NAMES)
IS_THING = (False,) * len(STUFF_NAMES) + (True,) * len(CLASS_NAMES)


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    # five objects: the two discs (objects 0 and 4) share a class; all five stay in view for six frames
    return SyntheticScene(seed=11, frames=FRAMES, width=120, height=80, objects=5, stuff=True)


def _write(scene, path, *, swap: tuple[int, int] | None = None) -> None:
    """The scene's truth as the engine writes results: instances with ids (object id + 10, objects
    ``swap`` trading ids from frame SWAP_FROM), the stuff from the panoptic resolution."""
    fusion = PanopticFusion(names=NAMES, is_thing=IS_THING)
    writer = JsonlWriter(path)
    for i in range(scene.frames):
        gt = scene.ground_truth(i)
        objects = gt.ids.tolist()
        if swap is not None and i >= SWAP_FROM:
            a, b = swap
            objects = [b if o == a else a if o == b else o for o in objects]
        n = len(objects)
        instances = Instances(ids=torch.tensor(objects) + 10, class_ids=torch.from_numpy(gt.class_ids),
                              scores=torch.ones(n), boxes=torch.zeros(n, 4), masks=torch.from_numpy(gt.masks),
                              labels=tuple(CLASS_NAMES[c] for c in gt.class_ids.tolist()))
        cls = np.array([o.class_id for o in scene.objects])
        labels = np.where(gt.id_map >= 0, len(STUFF_NAMES) + cls[np.maximum(gt.id_map, 0)], gt.stuff_map)
        semantic = SemanticMap(labels=torch.from_numpy(labels).long(), frame_index=i, fresh=True)
        panoptic, stuff = fusion(i, instances, semantic)
        frame = Frame(image=torch.zeros((scene.height, scene.width, 3), dtype=torch.uint8), index=i, pts=None,
                      capture_time=0.0)
        writer.write(FrameResult(frame=frame, instances=instances, times=StageTimes(), age_ms=0.0,
                                 panoptic=panoptic, stuff=stuff))
    writer.close()


def _relabel(path, old: str, new: str) -> None:
    lines = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for entry in record["stuff"]:
            entry["label"] = new if entry["label"] == old else entry["label"]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def test_the_truth_written_by_the_engines_sinks_scores_one(scene, tmp_path):
    _write(scene, tmp_path / "r.jsonl")
    report = evaluate_panoptic(read_panoptic_records(tmp_path / "r.jsonl"), scene)
    assert report.frames == FRAMES
    assert (report.miou, report.pq, report.sq, report.rq, report.stq, report.aq) == (1.0,) * 6


def test_road_called_sidewalk_costs_what_the_definitions_say(scene, tmp_path):
    path = tmp_path / "r.jsonl"
    _write(scene, path)
    _relabel(path, "road", "sidewalk")
    report = evaluate_panoptic(read_panoptic_records(path), scene)
    stuff = np.stack([scene.ground_truth(i).stuff_map for i in range(FRAMES)])
    road, sidewalk = int((stuff == 0).sum()), int((stuff == 1).sum())
    present = {int(c) for c in np.unique(stuff) if c >= 0} | {len(STUFF_NAMES) + o.class_id for o in scene.objects}
    # road IoU 0, sidewalk IoU S / (S + R), every other class 1
    assert report.miou == pytest.approx((len(present) - 2 + sidewalk / (sidewalk + road)) / len(present))
    # per frame: road is missed (a false negative) and the sidewalk segment, with road in it, matches
    # nothing (IoU <= 0.5): both classes score 0, the others 1
    for i, pq in enumerate(report.pq_per_frame):
        gt = scene.ground_truth(i)
        classes = {int(c) for c in np.unique(gt.stuff_map) if c >= 0} | {len(STUFF_NAMES) + c for c in gt.class_ids.tolist()}
        assert pq == pytest.approx((len(classes) - 2) / len(classes))
    assert report.aq == 1.0 and report.stq == pytest.approx(np.sqrt(report.miou))


def test_an_id_swap_costs_association_not_panoptic_quality(scene, tmp_path):
    path = tmp_path / "r.jsonl"
    _write(scene, path, swap=(0, 4))
    report = evaluate_panoptic(read_panoptic_records(path), scene)
    assert report.pq == 1.0 and report.miou == 1.0
    area = {o: [int((scene.ground_truth(i).id_map == o).sum()) for i in range(FRAMES)] for o in (0, 4)}
    a1, a2 = sum(area[0][:SWAP_FROM]), sum(area[0][SWAP_FROM:])
    b1, b2 = sum(area[4][:SWAP_FROM]), sum(area[4][SWAP_FROM:])
    # STQ's AQ for a track split over two predicted ids (Weber et al. 2021, eq. 3): each part's TPA times
    # its IoU with the whole track, over the track's area; the three other tracks score 1
    aq_a = (a1 * a1 / (a1 + a2 + b2) + a2 * a2 / (a1 + a2 + b1)) / (a1 + a2)
    aq_b = (b1 * b1 / (b1 + b2 + a2) + b2 * b2 / (b1 + b2 + a1)) / (b1 + b2)
    assert report.aq == pytest.approx((aq_a + aq_b + 3) / 5)
    assert report.stq == pytest.approx(np.sqrt(report.aq))


def test_results_without_stuff_give_no_panoptic_records_and_a_scene_without_stuff_is_refused(scene, tmp_path):
    path = tmp_path / "r.jsonl"
    _write(scene, path)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "stuff"}) + "\n"
                             for line in path.read_text().splitlines()))
    assert read_panoptic_records(plain) is None
    flat = SyntheticScene(seed=11, frames=FRAMES, width=120, height=80, objects=5)
    with pytest.raises(SourceError, match="stuff=1"):
        evaluate_panoptic(read_panoptic_records(path), flat)
