"""The typed values that travel along the data path: Frame → Detections → SemanticMap → Tracks → FrameResult.

Every field is documented here once; the JSONL contract in ``engine.sinks.jsonl`` is built from
``FrameResult`` and nothing else. Tensors keep the device they were made on: a result produced on a GPU
holds GPU tensors until a sink needs bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace

import torch


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture and where it came from in the stream."""

    image: torch.Tensor  # [H, W, 3] uint8 RGB; CPU from the source, moved to the compute device by Pipeline
    index: int  # 0-based position in the stream; frames a live buffer dropped still take an index
    pts: float | None  # presentation time in seconds, from the stream; None where the container has none
    capture_time: float  # wall-clock seconds (time.time()) when the decoder handed the frame out
    decode_ms: float = 0.0  # decoder time spent on this frame (demux + decode + colour conversion)
    stream: int = 0  # which stream of a multi-stream pipeline this frame belongs to

    def __post_init__(self) -> None:
        img = self.image
        if img.dim() != 3 or img.shape[2] != 3 or img.dtype != torch.uint8:
            raise ValueError(f"Frame.image must be [H, W, 3] uint8, got {tuple(img.shape)} {img.dtype}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True, slots=True)
class Detections:
    """The detector's instances for one frame, best score first."""

    boxes: torch.Tensor  # [N, 4] float32 x1, y1, x2, y2 in frame pixels
    scores: torch.Tensor  # [N] float32 confidence in [0, 1]
    class_ids: torch.Tensor  # [N] int64
    masks: torch.Tensor  # [N, H, W] bool at frame resolution
    names: tuple[str, ...] = ()  # class id -> label, from the model that produced these

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Detections fields disagree: boxes {tuple(self.boxes.shape)}, scores "
                f"{tuple(self.scores.shape)}, class_ids {tuple(self.class_ids.shape)}"
            )
        if self.masks.dim() != 3 or self.masks.shape[0] != n:
            raise ValueError(f"Detections.masks must be [{n}, H, W], got {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(height: int, width: int, *, device: torch.device | str = "cpu",
              names: tuple[str, ...] = ()) -> Detections:
        return Detections(
            boxes=torch.zeros((0, 4), dtype=torch.float32, device=device),
            scores=torch.zeros((0,), dtype=torch.float32, device=device),
            class_ids=torch.zeros((0,), dtype=torch.int64, device=device),
            masks=torch.zeros((0, height, width), dtype=torch.bool, device=device),
            names=names,
        )


@dataclass(frozen=True, slots=True)
class SemanticMap:
    """The semantic stage's per-pixel classes for one frame (the "stuff" layer under the instances).

    A map is computed on one frame and may be reused on later ones (``--segment-every K``): then
    ``fresh`` is False and ``frame_index`` still names the frame it was computed on.
    """

    labels: torch.Tensor  # [H, W] int64 class index per pixel at frame resolution; -1 = void (no class)
    frame_index: int  # Frame.index of the frame the model ran on
    fresh: bool  # True: computed on the frame it is handed out with; False: reused from frame_index
    # [C, h, w] float32 class scores at the model's resolution (pre-softmax logits for smp/torchvision,
    # mask-weighted class probabilities for Mask2Former); None unless the segmenter was asked to keep them
    logits: torch.Tensor | None = None
    # Mask2Former's panoptic thing segments at frame resolution (masks disjoint, class ids are label-set
    # indices, scores its class probabilities), to associate with tracks like detections; None otherwise
    things: Detections | None = None

    def __post_init__(self) -> None:
        lab = self.labels
        if not isinstance(lab, torch.Tensor) or lab.dim() != 2 or lab.dtype != torch.int64:
            got = (tuple(lab.shape), lab.dtype) if isinstance(lab, torch.Tensor) else type(lab).__name__
            raise ValueError(f"SemanticMap.labels must be [H, W] int64, got {got}")
        if isinstance(self.frame_index, bool) or not isinstance(self.frame_index, int) or self.frame_index < 0:
            raise ValueError(f"SemanticMap.frame_index must be a frame index >= 0, got {self.frame_index!r}")
        if not isinstance(self.fresh, bool):
            raise TypeError(f"SemanticMap.fresh must be True or False, got {self.fresh!r}")
        if self.logits is not None and (self.logits.dim() != 3 or not self.logits.is_floating_point()):
            raise ValueError(f"SemanticMap.logits must be [C, h, w] float, got {tuple(self.logits.shape)} "
                             f"{self.logits.dtype}")
        if self.things is not None and tuple(self.things.masks.shape[1:]) != tuple(lab.shape):
            raise ValueError(f"SemanticMap.things masks {tuple(self.things.masks.shape)} are not at the "
                             f"labels' resolution {tuple(lab.shape)}")

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])

    def reused(self) -> SemanticMap:
        """This map handed out again on a later frame: the same tensors, ``fresh=False``."""
        return replace(self, fresh=False)


@dataclass(frozen=True, slots=True)
class PanopticMap:
    """A frame's panoptic segmentation: every pixel has a class and a track id, a stuff class, or void."""

    semantic: torch.Tensor  # [H, W] int64 label-set class index per pixel; -1 = void
    instance: torch.Tensor  # [H, W] int64 track id on instance pixels; 0 = no instance (stuff, void)
    frame_index: int  # Frame.index

    def __post_init__(self) -> None:
        if self.semantic.dim() != 2 or self.semantic.shape != self.instance.shape \
                or self.semantic.dtype != torch.int64 or self.instance.dtype != torch.int64:
            raise ValueError(f"PanopticMap: semantic {tuple(self.semantic.shape)} {self.semantic.dtype} and "
                             f"instance {tuple(self.instance.shape)} {self.instance.dtype} must be one [H, W] "
                             "int64 size")


@dataclass(frozen=True, slots=True)
class Tracks:
    """The tracker's propagated objects for one frame, in slot order."""

    obj_ids: list[int]  # tracked object ids
    masks: torch.Tensor  # [N, H, W] bool at frame resolution (logits > 0)
    logits: torch.Tensor  # [N, h, w] float32 low-res mask logits (the model's image size / 4)
    scores: torch.Tensor  # [N] float32 object-score logits; > 0 means the model sees the object

    def __len__(self) -> int:
        return len(self.obj_ids)


@dataclass(frozen=True, slots=True)
class Instance:
    """One final instance of a frame, as a user reads it."""

    id: int  # track id, stable over time (a per-frame index when no tracker runs)
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    mask: torch.Tensor  # [H, W] bool


@dataclass(frozen=True, slots=True)
class Instances:
    """A frame's final instances as batched tensors; iterate for ``Instance`` values.

    Masks do not overlap once fusion has run: every pixel belongs to at most one instance.
    """

    ids: torch.Tensor  # [N] int64
    class_ids: torch.Tensor  # [N] int64
    scores: torch.Tensor  # [N] float32
    boxes: torch.Tensor  # [N, 4] float32 x1, y1, x2, y2
    masks: torch.Tensor  # [N, H, W] bool
    labels: tuple[str, ...]  # [N] class label of each instance

    def __post_init__(self) -> None:
        n = self.ids.shape[0]
        shapes = {
            "class_ids": (self.class_ids.shape, (n,)),
            "scores": (self.scores.shape, (n,)),
            "boxes": (self.boxes.shape, (n, 4)),
        }
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"Instances.{name} must be {want}, got {tuple(got)}")
        if self.masks.dim() != 3 or self.masks.shape[0] != n or len(self.labels) != n:
            raise ValueError(
                f"Instances: {n} ids but masks {tuple(self.masks.shape)} and {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self) -> Iterator[Instance]:
        ids, cls, scores, boxes = (t.tolist() for t in (self.ids, self.class_ids, self.scores, self.boxes))
        for i in range(len(ids)):
            yield Instance(id=ids[i], class_id=cls[i], label=self.labels[i], score=scores[i],
                           box=tuple(boxes[i]), mask=self.masks[i])

    @staticmethod
    def empty(height: int, width: int, *, device: torch.device | str = "cpu") -> Instances:
        return Instances(
            ids=torch.zeros((0,), dtype=torch.int64, device=device),
            class_ids=torch.zeros((0,), dtype=torch.int64, device=device),
            scores=torch.zeros((0,), dtype=torch.float32, device=device),
            boxes=torch.zeros((0, 4), dtype=torch.float32, device=device),
            masks=torch.zeros((0, height, width), dtype=torch.bool, device=device),
            labels=(),
        )

    @staticmethod
    def from_detections(dets: Detections) -> Instances:
        """Detections as instances with per-frame ids 0..N-1 (the detector-only pipeline)."""
        ids = torch.arange(len(dets), dtype=torch.int64, device=dets.boxes.device)
        cls = dets.class_ids.tolist()
        labels = tuple(dets.names[c] if 0 <= c < len(dets.names) else str(c) for c in cls)
        return Instances(ids=ids, class_ids=dets.class_ids, scores=dets.scores, boxes=dets.boxes,
                         masks=dets.masks, labels=labels)


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Milliseconds each stage spent on one frame. ``total`` runs from the frame leaving the source
    buffer to its result being handed out; ``decode`` happened before that, on the decode thread."""

    decode: float = 0.0
    detect: float = 0.0
    track: float = 0.0
    fuse: float = 0.0
    render: float = 0.0
    total: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name), 3) for f in fields(self)}


@dataclass(slots=True)
class SourceStats:
    """A stream's counters. The source owns the live object and updates it on its decode thread; each
    ``FrameResult`` carries a ``snapshot`` taken when the frame was handed out."""

    decoded: int = 0  # pictures the decoder produced
    delivered: int = 0  # frames handed to the consumer
    dropped: int = 0  # frames a live buffer discarded to stay current
    reconnects: int = 0  # successful reconnections after a lost stream
    gap_s: float = 0.0  # seconds spent without frames while reconnecting
    corrupt: int = 0  # damaged packets the decoder rejected and skipped (they produce no picture)
    late: int = 0  # frames a multi-stream pipeline dropped for being older than its latency budget
    lost: int = 0  # frames the stream should have had that never became a picture: declared by a file
    #   but not decoded (exact, at the file's end), or skipped by a jump in pts (an estimate, live)
    concealed: int = 0  # frames delivered with damage the decoder papered over (smears are possible)
    pts_guessed: int = 0  # frames the stream gave no pts; delivered at the previous pts + one interval
    pts_fixed: int = 0  # frames whose pts was not after the previous one's; moved so pts keeps increasing

    def snapshot(self) -> SourceStats:
        return replace(self)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the pipeline hands out for every frame: the public, stable output."""

    frame: Frame
    instances: Instances
    times: StageTimes
    age_ms: float  # wall-clock ms from capture to this result being handed out
    overlay: torch.Tensor | None = None  # [H, W, 3] uint8 rendered picture, when a sink or the caller asked
    stats: SourceStats = field(default_factory=SourceStats)  # the stream's counters when this frame was handed out

    @property
    def index(self) -> int:
        return self.frame.index

