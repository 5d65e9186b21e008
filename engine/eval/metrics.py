"""Tracking and segmentation quality against ground truth, computed by TrackEval.

TrackEval (the evaluator of the HOTA paper and the MOTChallenge/KITTI/DAVIS benchmarks) computes the
metrics; this module only lays a sequence out the way its dataset loaders do: ids renumbered 0..K-1
per sequence and, per frame, the mask IoU of every ground-truth object with every predicted one (COCO
RLE, ``pycocotools.mask.iou``, as TrackEval's MOTS loaders compute it).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util


@dataclass(frozen=True, slots=True)
class FrameMasks:
    """One frame's objects: ids and their masks as COCO RLE (``counts`` as bytes or str)."""

    ids: tuple[int, ...]
    rles: tuple[dict, ...]
    size: tuple[int, int]  # (height, width)

    def coco_rles(self) -> list[dict]:
        return [{"size": list(r["size"]), "counts": r["counts"].encode() if isinstance(r["counts"], str)
                 else r["counts"]} for r in self.rles]


@dataclass(frozen=True, slots=True)
class Report:
    frames: int
    gt_objects: int
    predicted_ids: int
    hota: float  # higher-order tracking accuracy, averaged over localisation thresholds
    deta: float  # detection accuracy part of HOTA
    assa: float  # association accuracy part of HOTA
    mota: float
    idf1: float
    id_switches: int  # CLEAR IDSW at IoU 0.5
    j_mean: float  # region similarity (mask IoU), DAVIS
    f_mean: float  # boundary accuracy, DAVIS
    j_and_f: float
    object_iou: dict[int, float]  # ground-truth id -> mean IoU with the predicted id matched to it

    def format(self) -> str:
        rows = [("frames", self.frames), ("gt objects", self.gt_objects), ("predicted ids", self.predicted_ids),
                ("HOTA", self.hota), ("DetA", self.deta), ("AssA", self.assa), ("MOTA", self.mota),
                ("IDF1", self.idf1), ("ID switches", self.id_switches), ("J", self.j_mean),
                ("F", self.f_mean), ("J&F", self.j_and_f)]
        lines = [f"{name:<14}{value:.4f}" if isinstance(value, float) else f"{name:<14}{value}"
                 for name, value in rows]
        lines += [f"IoU gt {k:<7}{v:.4f}" for k, v in sorted(self.object_iou.items())]
        return "\n".join(lines)


def evaluate(truth: Sequence[FrameMasks], predicted: Sequence[FrameMasks]) -> Report:
    """Score ``predicted`` against ``truth``, frame by frame (both the same length)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} ground-truth frames but {len(predicted)} predicted frames")
    gt_index = {k: i for i, k in enumerate(sorted({i for f in truth for i in f.ids}))}
    pr_index = {k: i for i, k in enumerate(sorted({i for f in predicted for i in f.ids}))}
    gt_ids, pr_ids, sims, gt_dets, pr_dets = [], [], [], [], []
    for gt, pr in zip(truth, predicted):
        g, p = gt.coco_rles(), pr.coco_rles()
        gt_ids.append(np.array([gt_index[i] for i in gt.ids], dtype=int))
        pr_ids.append(np.array([pr_index[i] for i in pr.ids], dtype=int))
        gt_dets.append(g)
        pr_dets.append(p)
        sim = (np.asarray(mask_util.iou(g, p, [0] * len(p)), dtype=float).reshape(len(g), len(p))
               if g and p else np.zeros((len(g), len(p))))
        sims.append(sim)
    data = {"num_timesteps": len(truth), "num_gt_ids": len(gt_index), "num_tracker_ids": len(pr_index),
            "num_gt_dets": sum(len(i) for i in gt_ids), "num_tracker_dets": sum(len(i) for i in pr_ids),
            "gt_ids": gt_ids, "tracker_ids": pr_ids, "similarity_scores": sims,
            "gt_dets": gt_dets, "tracker_dets": pr_dets, "seq": "sequence"}
    hota, clear, identity, jf = _trackeval(data)
    return Report(
        frames=len(truth), gt_objects=len(gt_index), predicted_ids=len(pr_index),
        hota=float(np.mean(hota["HOTA"])), deta=float(np.mean(hota["DetA"])),
        assa=float(np.mean(hota["AssA"])), mota=float(clear["MOTA"]), idf1=float(identity["IDF1"]),
        id_switches=int(clear["IDSW"]), j_mean=float(jf["J-Mean"]), f_mean=float(jf["F-Mean"]),
        j_and_f=float(jf["J&F"]), object_iou=_object_iou(gt_index, pr_index, gt_ids, pr_ids, sims),
    )


def _trackeval(data: dict) -> tuple[dict, dict, dict, dict]:
    from trackeval.metrics import CLEAR, HOTA, Identity, JAndF

    quiet = {"PRINT_CONFIG": False}
    results = [metric.eval_sequence(data) for metric in (HOTA(quiet), CLEAR(quiet), Identity(quiet))]
    if data["num_gt_ids"] == 0 and data["num_tracker_ids"] == 0:
        jf = {"J-Mean": 1.0, "F-Mean": 1.0, "J&F": 1.0}  # nothing to find, nothing found
    else:
        with _area_in_chunks():
            jf = JAndF().eval_sequence(copy.deepcopy(data))  # it pads the mask lists in place
    return (*results, jf)


_AREA_CHUNK = 255  # pycocotools 2.0.11's area() overflows on a list of 256 or more RLEs


@contextlib.contextmanager
def _area_in_chunks():
    """``pycocotools.mask.area`` on lists of at most ``_AREA_CHUNK`` RLEs while TrackEval's J&F runs: it
    asks for the area of every predicted id's mask at once per frame, and pycocotools 2.0.11 fails with
    "integer 256 out of bounds for uint8" from 256 masks on (an engine on random weights starts that many
    ids in a few hundred frames). The areas are the same, computed in slices."""
    original = mask_util.area

    def area(rles):
        if type(rles) is not list or len(rles) <= _AREA_CHUNK:
            return original(rles)
        return np.concatenate([original(rles[k:k + _AREA_CHUNK]) for k in range(0, len(rles), _AREA_CHUNK)])

    with _PATCH_LOCK:
        mask_util.area = area
        try:
            yield
        finally:
            mask_util.area = original


_PATCH_LOCK = threading.Lock()


def _object_iou(gt_index: dict, pr_index: dict, gt_ids: list, pr_ids: list, sims: list) -> dict[int, float]:
    """Per ground-truth object: mean IoU over the frames it is visible in, with the one predicted id
    matched to it over the whole sequence (optimal assignment on summed IoU)."""
    from scipy.optimize import linear_sum_assignment

    total = np.zeros((len(gt_index), len(pr_index)))
    visible = np.zeros(len(gt_index))
    for g, p, s in zip(gt_ids, pr_ids, sims):
        visible[g] += 1
        if len(g) and len(p):
            total[np.ix_(g, p)] += s
    rows, cols = linear_sum_assignment(total, maximize=True) if total.size else ([], [])
    matched = dict(zip(rows, cols))
    names = {i: k for k, i in gt_index.items()}
    return {names[g]: float(total[g, matched[g]] / visible[g]) if g in matched and visible[g] else 0.0
            for g in range(len(gt_index))}
