"""Results as JSON Lines: one line per frame, the engine's data contract.

Each line is one JSON object (keys in this order, all present on every line)::

    {"frame": 12,                      # Frame.index: 0-based, counts frames a live buffer dropped
     "pts": 0.4,                       # stream presentation time in seconds, or null
     "capture_time": 1764000000.123,   # wall-clock seconds when the frame was decoded
     "instances": [{"id": 3,           # track id (a per-frame index with --tracker none)
                    "class_id": 2, "label": "car", "score": 0.91,
                    "box": [x1, y1, x2, y2],             # frame pixels
                    "mask": {"size": [h, w], "counts": "<COCO compressed RLE>"}}],
     "stuff": [{"class_id": 0,         # only with a semantic segmenter (--segmenter): the frame's stuff,
                "label": "road",       # one entry per stuff class present, in class order; class_id is
                "area": 51234,         # the label set's class index, area the mask's pixels
                "mask": {"size": [h, w], "counts": "<COCO compressed RLE>"}}],
     "times_ms": {"decode": ..., "detect": ..., "segment": ..., "track": ..., "fuse": ..., "refine": ..., "render": ...,
                  "total": ..., "overlapped": ...},  # engine.types.Stage, in order, then total and the
                                       # stage time that ran beside the previous frame (engine.overlap)
     "age_ms": 41.7,                   # capture to hand-out, wall clock
     "decisions": [...],               # what changed in the tracker on this frame, in order (below)
     "session": 0,                     # ids are unique within a session; +1 when a server restarts the stream
     "quality": 0}                     # degradation level (engine.fleet.degrade): 0 = full quality

A decision is one object with its kind and the track's id::

    {"decision": "spawn", "id": 4, "origin": "detector", "class_id": 2, "score": 0.81}
    {"decision": "prompt", "id": 5, "origin": "user", "points": [[x, y]], "labels": [1], "box": null}
    {"decision": "adopt", "id": 5, "origin": "user"}        # the fusion follows a user's object
    {"decision": "reprompt", "id": 4, "reason": "drift"}     # or "reacquire"
    {"decision": "reidentify", "id": 2, "spawned": 7, "similarity": 0.83}  # 7 is object 2 come back
    {"decision": "retire", "id": 4, "reason": "lost"}        # or "unconfirmed", "duplicate", "user"

``session`` and ``quality`` change only under ``streamseg serve``: a stream re-placed after its worker
died (or removed and added again) starts a new session, whose track ids restart; a stream over its
latency budget steps its quality level down (and back up), and each line says the level it was made at.

``pycocotools.mask.decode({"size": m["size"], "counts": m["counts"].encode()})`` gives the mask.
No two instance masks overlap, and no stuff mask overlaps another or an instance mask: a stuff mask holds
its class's pixels that no instance covers (``engine.fuse.stuff_segments``). Pixels in no mask are void:
a thing the semantic model saw but no instance covers, or an instance whose class the label set lacks.
``"stuff"`` is the one key that is not always present: lines of a run without a segmenter have none.
Each line goes to the file in one unbuffered ``write``, and a failed write is cut back to the last whole
line, so a crash or a full disk leaves only whole lines behind. The file is created (or truncated) by the
first line, not by the writer's constructor: a run that never produces a frame, or that stops on another
output's error before its first frame, leaves an earlier file at that path as it was.
"""

from __future__ import annotations

import json
import os

from engine.errors import SinkError
from engine.ops import rle_encode
from engine.sinks.base import check_writable
from engine.sinks.panoptic import stuff_records
from engine.types import (Adopt, Decision, FrameResult, Reidentify, Reprompt, Retire, Spawn, UserPrompt)


def decision_record(decision: Decision) -> dict:
    """The JSONL record of one decision (see the module docstring)."""
    if isinstance(decision, Spawn):
        return {"decision": "spawn", "id": decision.obj_id, "origin": decision.origin.value,
                "class_id": decision.class_id, "score": round(decision.score, 4)}
    if isinstance(decision, UserPrompt):
        return {"decision": "prompt", "id": decision.obj_id, "origin": "user",
                "points": [[round(x, 2), round(y, 2)] for x, y in decision.points], "labels": list(decision.labels),
                "box": None if decision.box is None else [round(v, 2) for v in decision.box]}
    if isinstance(decision, Adopt):
        return {"decision": "adopt", "id": decision.obj_id, "origin": decision.origin.value}
    if isinstance(decision, Reprompt):
        return {"decision": "reprompt", "id": decision.obj_id, "reason": decision.reason.value}
    if isinstance(decision, Reidentify):
        return {"decision": "reidentify", "id": decision.obj_id, "spawned": decision.spawned_id,
                "similarity": round(decision.similarity, 4)}
    if isinstance(decision, Retire):
        return {"decision": "retire", "id": decision.obj_id, "reason": decision.reason.value}
    raise TypeError(f"no JSONL record for {type(decision).__name__}")


def result_to_record(result: FrameResult) -> dict:
    """The JSONL record of one result (see the module docstring for the contract)."""
    inst = result.instances
    rles = rle_encode(inst.masks)
    ids, cls, scores, boxes = (t.tolist() for t in (inst.ids, inst.class_ids, inst.scores, inst.boxes))
    instances = [
        {"id": ids[i], "class_id": cls[i], "label": inst.labels[i], "score": round(scores[i], 4),
         "box": [round(v, 2) for v in boxes[i]], "mask": rles[i]}
        for i in range(len(ids))
    ]
    frame = result.frame
    record = {
        "frame": frame.index,
        "pts": None if frame.pts is None else round(frame.pts, 6),
        "capture_time": round(frame.capture_time, 6),
        "instances": instances,
    }
    if result.stuff is not None:
        record["stuff"] = stuff_records(result.stuff)
    record["times_ms"] = result.times.as_dict()
    record["age_ms"] = round(result.age_ms, 3)
    record["decisions"] = [decision_record(d) for d in result.decisions]
    record["session"] = result.session
    record["quality"] = result.quality
    return record


class JsonlWriter:
    """Writes one JSON line per result to ``path``.

    The constructor only checks that ``path`` can be written (``check_writable``); the file is created
    or truncated by the first ``write``. After a failed write the file keeps its whole lines and the
    writer refuses further lines, so a later success cannot leave a gap in the middle of the file.

    Raises:
        SinkError: from the constructor when ``path`` cannot be written; from ``write`` when writing
            fails (a full disk), naming the file and the lines it holds.
    """

    wants_overlay = False

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_writable(path, option="--jsonl")
        self._file = None
        self._failed: str | None = None  # the first failure, repeated to any later write
        self.lines = 0
        self._size = 0  # bytes of whole lines written; a failed write is truncated back to it

    def write(self, result: FrameResult) -> None:
        if self._failed is not None:
            raise SinkError(self._failed)
        line = (json.dumps(result_to_record(result), separators=(",", ":")) + "\n").encode("utf-8")
        if self._file is None:
            self._file = self._open()
        try:
            view = memoryview(line)
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            self._drop_partial_line()
            self._failed = (f"writing {self.path} failed after {self.lines} lines ({exc.strerror}); the "
                            "lines written before are whole; free space or choose another --jsonl path")
            raise SinkError(self._failed) from None
        self._size += len(line)
        self.lines += 1

    def _open(self):
        try:
            # Unbuffered: each line reaches the file in one write() call, never split across two.
            return open(self.path, "wb", buffering=0)
        except OSError as exc:
            self._failed = f"cannot write {self.path}: {exc.strerror}; choose another --jsonl path"
            raise SinkError(self._failed) from None

    def _drop_partial_line(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self._size)
        except OSError:
            pass  # not a regular file (/dev/full), or the disk refused even that

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
