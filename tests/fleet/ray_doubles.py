"""A ``RunStreams`` double for the Ray tests: real synthetic sources and real JSONL lines, with the
scene's ground truth standing in for the networks (the models are a marker of where they loaded).

Imported by Ray's worker processes, so it must stay importable from the repository root (the tests
put it on the workers' PYTHONPATH).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch
from torchvision.ops import masks_to_boxes

from engine.errors import StreamsegError
from engine.fleet.ray_workers import Assignment, WorkerContext
from engine.sinks.mqtt import encode_line
from engine.sources import open_source
from engine.types import FrameResult, Instances, StageTimes


def load_models() -> dict:
    """What a worker holds once: here only where and when it was built."""
    return {"pid": os.getpid(), "loaded_at": time.time()}


def _instances(source, index: int) -> Instances:
    truth = source.scene.ground_truth(index)
    masks = torch.from_numpy(truth.masks)
    keep = masks.flatten(1).any(1)
    masks = masks[keep]
    ids, class_ids = torch.from_numpy(truth.ids)[keep], torch.from_numpy(truth.class_ids)[keep]
    names = source.scene.class_names
    return Instances(ids=ids, class_ids=class_ids, scores=torch.ones(len(ids)), boxes=masks_to_boxes(masks),
                     masks=masks, labels=tuple(names[c] for c in class_ids.tolist()))


def run_synthetic(models: dict, assignments: Sequence[Assignment], ctx: WorkerContext) -> None:
    """Every stream of the group, one frame each per tick, ``fps`` ticks a second (``StreamSpec.options``,
    default 20). A replayable source skips the frames the driver already holds."""
    fps = max(float((a.stream.options or {}).get("fps", 20)) for a in assignments)
    running = {}
    for a in assignments:
        try:
            source = open_source(a.stream.source)
            source.start()
            running[a.stream.name] = (a, source)
        except StreamsegError as exc:
            ctx.end(a.stream.name, str(exc))
    next_tick = time.monotonic()
    while running:
        for name, (a, source) in list(running.items()):
            frame = None if ctx.stopping(name) else _next_new_frame(source, a)
            if frame is None:
                source.close()
                del running[name]
                ctx.end(name)
                continue
            started = time.perf_counter()
            instances = _instances(source, frame.index)
            total = (time.perf_counter() - started) * 1000.0
            result = FrameResult(frame=frame, instances=instances, times=StageTimes(decode=frame.decode_ms, total=total),
                                 age_ms=(time.time() - frame.capture_time) * 1000.0, stats=source.stats.snapshot())
            ctx.emit(name, frame.index, encode_line(result))
        next_tick += 1.0 / fps
        time.sleep(max(0.0, next_tick - time.monotonic()))


def _next_new_frame(source, a: Assignment):
    while (frame := source.read(timeout=30.0)) is not None:
        if source.live or a.resume_after is None or frame.index > a.resume_after:
            return frame
    return None
