"""Reading a results JSONL (engine.sinks.jsonl's contract) and a synthetic scene's truth as the
evaluator's per-frame records."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TypeVar

from engine.errors import SourceError
from engine.eval.metrics import FrameMasks, Report, evaluate
from engine.sources.synthetic import SyntheticScene

T = TypeVar("T")


def read_result_lines(path: str | os.PathLike, parse: Callable[[dict], T]) -> dict[int, T]:
    """Frame index -> ``parse(record)`` for every line of a JSONL written by ``--jsonl``.

    Raises:
        SourceError: one line naming ``path:line`` for a line that is not JSON or that ``parse`` rejects
            (ValueError, KeyError, TypeError, IndexError), or naming ``path`` when it cannot be read.
    """
    parsed: dict[int, T] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    parsed[int(record["frame"])] = parse(record)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    raise SourceError(f"{path}:{number}: not a streamseg results line ({exc!r}); "
                                      "give the file written by 'streamseg run --jsonl'") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    return parsed


def read_results(path: str | os.PathLike) -> dict[int, FrameMasks]:
    """Frame index -> that frame's predicted ids and masks, from a JSONL written by ``--jsonl``."""
    frames = read_result_lines(path, _frame_masks)
    if not frames:
        raise SourceError(f"{path}: no result lines; give the file written by 'streamseg run --jsonl'")
    return frames


def _frame_masks(record: dict) -> FrameMasks:
    instances = record["instances"]
    rles = tuple(inst["mask"] for inst in instances)
    size = tuple(rles[0]["size"]) if rles else (0, 0)
    return FrameMasks(ids=tuple(int(inst["id"]) for inst in instances), rles=rles, size=size)


def evaluate_against_scene(results: dict[int, FrameMasks], scene: SyntheticScene) -> Report:
    """Score results against the scene's ground truth, over the frames the results cover."""
    from engine.eval.fusion import frame_masks

    missing = [i for i in results if not 0 <= i < scene.frames]
    if missing:
        raise SourceError(f"results hold frame {missing[0]}, but the scene has frames 0..{scene.frames - 1}; "
                          "was it run on this scene?")
    truth, predicted = [], []
    size = (scene.height, scene.width)
    for i in sorted(results):
        gt = scene.ground_truth(i)
        truth.append(frame_masks(gt.ids, gt.masks, size))
        predicted.append(results[i])
    return evaluate(truth, predicted)
