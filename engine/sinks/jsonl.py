"""Results as JSON Lines: one line per frame, the engine's data contract.

Each line is one JSON object (keys in this order, all present on every line)::

    {"frame": 12,                      # Frame.index: 0-based, counts frames a live buffer dropped
     "pts": 0.4,                       # stream presentation time in seconds, or null
     "capture_time": 1764000000.123,   # wall-clock seconds when the frame was decoded
     "instances": [{"id": 3,           # track id (a per-frame index with --tracker none)
                    "class_id": 2, "label": "car", "score": 0.91,
                    "box": [x1, y1, x2, y2],             # frame pixels
                    "mask": {"size": [h, w], "counts": "<COCO compressed RLE>"}}],
     "times_ms": {"decode": ..., "detect": ..., "track": ..., "fuse": ..., "render": ..., "total": ...},
     "age_ms": 41.7}                   # capture to hand-out, wall clock

``pycocotools.mask.decode({"size": m["size"], "counts": m["counts"].encode()})`` gives the mask.
Each line goes to the file in one unbuffered ``write``, and a failed write is cut back to the last whole
line, so a crash or a full disk leaves only whole lines behind.
"""

from __future__ import annotations

import json
import os

from engine.errors import SinkError
from engine.ops import rle_encode
from engine.sinks.base import check_writable
from engine.types import FrameResult


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
    return {
        "frame": frame.index,
        "pts": None if frame.pts is None else round(frame.pts, 6),
        "capture_time": round(frame.capture_time, 6),
        "instances": instances,
        "times_ms": result.times.as_dict(),
        "age_ms": round(result.age_ms, 3),
    }


class JsonlWriter:
    """Writes one JSON line per result to ``path`` (created or truncated when the writer is made)."""

    wants_overlay = False

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = check_writable(path, option="--jsonl")
        try:
            # Unbuffered: each line reaches the file in one write() call, never split across two.
            self._file = open(self.path, "wb", buffering=0)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}; choose another --jsonl path") from None
        self.lines = 0
        self._size = 0  # bytes of whole lines written; a failed write is truncated back to it

    def write(self, result: FrameResult) -> None:
        line = (json.dumps(result_to_record(result), separators=(",", ":")) + "\n").encode("utf-8")
        try:
            view = memoryview(line)
            while view:
                view = view[self._file.write(view):]
        except OSError as exc:
            self._drop_partial_line()
            raise SinkError(f"writing {self.path} failed after {self.lines} lines: {exc.strerror}") from None
        self._size += len(line)
        self.lines += 1

    def _drop_partial_line(self) -> None:
        try:
            os.ftruncate(self._file.fileno(), self._size)
        except OSError:
            pass  # the disk refused even that; the next reader sees one cut-off last line

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
