"""The one list of stages a frame passes through (``Stage``) and the times a frame spent in each
(``StageTimes``): the run order of the pipeline, the latency table's rows, the JSONL ``times_ms`` keys
and the benchmarks' columns all derive from ``Stage``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["STAGE_NAMES", "TIMING_KEYS", "Stage", "StageTimes"]


class Stage(str, Enum):
    """The stages a frame passes through, in order. This list is the one source of the pipeline's run
    order, of ``StageTimes``, of the latency table, of the JSONL ``times_ms`` keys and of the
    benchmarks' columns: a new stage is one line here (and its step in ``engine.processor``)."""

    DECODE = "decode"  # demux + decode + colour conversion, on the source's thread
    DETECT = "detect"  # frame upload and the detector
    SEGMENT = "segment"  # the semantic model on the frames it is due on (every k-th), the last map reused between
    TRACK = "track"  # the tracker's step, and every prompt applied to it (decisions, user prompts)
    FUSE = "fuse"  # association and overlap resolution
    REFINE = "refine"  # boundary refinement of the final masks (--refine), when asked for
    RENDER = "render"  # the overlay picture, when a sink or the caller asked for it

    @classmethod
    def named(cls, name: str | Stage) -> Stage:
        """The stage called ``name``; ValueError naming the known stages for any other name."""
        stage = _STAGE_BY_NAME.get(name)  # a dict, not cls(name): called several times per stage a frame
        if stage is None:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown stage {name!r}; the stages are {known}")
        return stage


STAGE_NAMES: tuple[str, ...] = tuple(s.value for s in Stage)
# Keyed by both the value and the member: an Enum member hashes by its member name, not its str value.
_STAGE_BY_NAME: dict[str | Stage, Stage] = {**{s.value: s for s in Stage}, **{s: s for s in Stage}}
TIMING_KEYS: tuple[str, ...] = (*STAGE_NAMES, "total", "overlapped")  # StageTimes.as_dict() keys, in this order


@dataclass(frozen=True, slots=True, init=False)
class StageTimes:
    """Milliseconds each stage spent on one frame, one value per ``Stage``, read as attributes
    (``times.track``). ``total`` runs from the frame's call through the stages starting (the serial
    loop takes it from the source buffer then; the overlapped loop took it one frame earlier, to detect
    it ahead) to its result being handed out; ``decode`` happened before that, on the decode thread.

    ``overlapped``: milliseconds of the stages that ran beside another frame's stages, on another thread,
    and so are not in ``total`` (the stages after ``decode`` sum to ``total + overlapped``); 0 in the serial
    loop. With overlapped stages (``engine.overlap``) it is the part of ``detect`` that ran during the
    previous frame.

    ``StageTimes(decode=1.1, track=12.0, total=24.3)``: stages not named are 0; a name that is not a
    ``Stage`` is a ValueError.
    """

    ms: tuple[float, ...]  # [len(Stage)] milliseconds, in Stage order
    total: float
    overlapped: float

    def __init__(self, total: float = 0.0, *, overlapped: float = 0.0, **stages: float) -> None:
        values = dict.fromkeys(STAGE_NAMES, 0.0)
        for name, value in stages.items():
            values[Stage.named(name).value] = float(value)
        object.__setattr__(self, "ms", tuple(values.values()))
        object.__setattr__(self, "total", float(total))
        object.__setattr__(self, "overlapped", float(overlapped))

    @classmethod
    def of(cls, stages: Mapping[str | Stage, float], *, total: float, overlapped: float = 0.0) -> StageTimes:
        """From a mapping of stage (or stage name) to milliseconds."""
        return cls(total, overlapped=overlapped, **{Stage.named(k).value: v for k, v in stages.items()})

    def __getattr__(self, name: str) -> float:
        # Only reached for names that are not slots: the stages.
        try:
            return self.ms[_STAGE_INDEX[name]]
        except KeyError:
            raise AttributeError(f"StageTimes has no stage {name!r}; the stages are "
                                 f"{', '.join(STAGE_NAMES)}") from None

    def __getitem__(self, stage: str | Stage) -> float:
        return self.ms[_STAGE_INDEX[Stage.named(stage).value]]

    def as_dict(self) -> dict[str, float]:
        """``{stage: ms, ..., "total": ms, "overlapped": ms}`` in ``TIMING_KEYS`` order, rounded to the
        microsecond."""
        out = {name: round(v, 3) for name, v in zip(STAGE_NAMES, self.ms)}
        out["total"] = round(self.total, 3)
        out["overlapped"] = round(self.overlapped, 3)
        return out


_STAGE_INDEX = {name: i for i, name in enumerate(STAGE_NAMES)}
