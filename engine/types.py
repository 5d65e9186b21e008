"""The typed values that travel along the data path: Frame → Detections → SemanticMap → Tracks → Decisions
→ FrameResult. The one list of stages a frame passes through and its times (``Stage``, ``StageTimes``)
live in ``engine.timing`` and are importable from here too.

Every field is documented here once; the JSONL contract in ``engine.sinks.jsonl`` is built from
``FrameResult`` and nothing else. Tensors keep the device they were made on: a result produced on a GPU
holds GPU tensors until a sink needs bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

import torch

# re-exported: the values on the arrows are all importable from engine.types
from engine.timing import STAGE_NAMES as STAGE_NAMES
from engine.timing import TIMING_KEYS as TIMING_KEYS
from engine.timing import Stage as Stage
from engine.timing import StageTimes


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture and where it came from in the stream."""

    image: torch.Tensor  # [H, W, 3] uint8 RGB; CPU from the source, moved to the compute device by Pipeline
    index: int  # 0-based position in the stream; frames a live buffer dropped still take an index
    pts: float | None  # presentation time in seconds, from the stream; None where the container has none
    capture_time: float  # wall-clock seconds (time.time()) when the decoder handed the frame out
    decode_ms: float = 0.0  # decoder time spent on this frame (decode + colour conversion; not the wait for data)
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
    masks: torch.Tensor  # [N, H, W] bool at frame resolution; inside its box, unless ``extents`` says otherwise
    names: tuple[str, ...] = ()  # class id -> label, from the model that produced these
    # [N, 4] float32 x1, y1, x2, y2 (pixel edges) holding each mask, for a detector whose masks may reach
    # past their boxes (Mask R-CNN pastes its masks into boxes 1/14 larger); None: every mask lies
    # inside its box (YOLO crops its masks to them)
    extents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Detections fields disagree: boxes {tuple(self.boxes.shape)}, scores "
                f"{tuple(self.scores.shape)}, class_ids {tuple(self.class_ids.shape)}"
            )
        if self.masks.dim() != 3 or self.masks.shape[0] != n:
            raise ValueError(f"Detections.masks must be [{n}, H, W], got {tuple(self.masks.shape)}")
        if self.extents is not None and tuple(self.extents.shape) != (n, 4):
            raise ValueError(f"Detections.extents must be [{n}, 4], got {tuple(self.extents.shape)}")

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
    # [H, W] int64 on instance pixels: the instance's id + id_offset (>= 1); 0 = no instance (stuff, void)
    instance: torch.Tensor
    frame_index: int  # Frame.index
    # Added to every instance id so that an id of 0 (a per-frame index with --tracker none) is not read as
    # "no instance"; the pipeline's maps use 1, and ``instance - id_offset`` is the id a result reports.
    id_offset: int = 0

    def __post_init__(self) -> None:
        if self.semantic.dim() != 2 or self.semantic.shape != self.instance.shape \
                or self.semantic.dtype != torch.int64 or self.instance.dtype != torch.int64:
            raise ValueError(f"PanopticMap: semantic {tuple(self.semantic.shape)} {self.semantic.dtype} and "
                             f"instance {tuple(self.instance.shape)} {self.instance.dtype} must be one [H, W] "
                             "int64 size")


@dataclass(frozen=True, slots=True)
class StuffSegments:
    """A frame's stuff: one segment per stuff class present, made of the pixels with that class that no
    instance covers. Masks are disjoint, and disjoint from every instance mask of the same frame."""

    class_ids: torch.Tensor  # [K] int64 label-set class index, ascending
    labels: tuple[str, ...]  # [K] class name of each segment
    masks: torch.Tensor  # [K, H, W] bool at frame resolution

    def __post_init__(self) -> None:
        k = self.class_ids.shape[0]
        if self.class_ids.shape != (k,) or self.masks.dim() != 3 or self.masks.shape[0] != k \
                or len(self.labels) != k:
            raise ValueError(f"StuffSegments: {k} class ids but masks {tuple(self.masks.shape)} and "
                             f"{len(self.labels)} labels")

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    @property
    def areas(self) -> torch.Tensor:  # [K] int64 pixels
        return self.masks.flatten(1).sum(1)


@dataclass(frozen=True, slots=True)
class Tracks:
    """The tracker's propagated objects for one frame, in slot order."""

    obj_ids: list[int]  # tracked object ids
    masks: torch.Tensor  # [N, H, W] bool at frame resolution (logits > 0)
    logits: torch.Tensor  # [N, h, w] float32 low-res mask logits (the model's image size / 4)
    scores: torch.Tensor  # [N] float32 object-score logits; > 0 means the model sees the object
    # What identifies each object, for re-identification after its track is retired (engine.fuse.reid);
    # None where the tracker gives none.
    embeddings: torch.Tensor | None = None  # [N, D] float32 unit appearance embeddings; zero rows: too small
    pointers: torch.Tensor | None = None  # [N, P] float32 object pointers (SAM 2's obj_ptr)

    def __len__(self) -> int:
        return len(self.obj_ids)

    def updated(self, outputs: Sequence[Tracks] = (), *, removed: Iterable[int] = ()) -> Tracks:
        """These tracks after prompts on the same frame: each object of ``outputs`` replaces this one's
        row in place, or is appended when new; ``removed`` objects are left out. ``self`` when nothing
        changes, so a frame without prompts costs no copy. Embeddings and pointers are kept when every
        row has them."""
        gone = set(removed) & set(self.obj_ids)
        if not any(len(out) for out in outputs) and not gone:
            return self
        rows: dict[int, tuple[Tracks, int]] = {obj: (self, i) for i, obj in enumerate(self.obj_ids)}
        for out in outputs:
            for i, obj in enumerate(out.obj_ids):
                rows[obj] = (out, i)  # a dict keeps a replaced key in its place
        for obj in removed:
            rows.pop(obj, None)
        if not rows:
            return Tracks(obj_ids=[], masks=self.masks[:0], logits=self.logits[:0], scores=self.scores[:0],
                          embeddings=None if self.embeddings is None else self.embeddings[:0],
                          pointers=None if self.pointers is None else self.pointers[:0])
        sources = list(rows.values())

        def rows_of(name: str) -> torch.Tensor | None:
            parts = [getattr(t, name) for t, _ in sources]
            if any(p is None for p in parts) or len({p.shape[1:] for p in parts}) > 1:
                return None
            return torch.stack([p[i] for p, (_, i) in zip(parts, sources)])

        return Tracks(obj_ids=list(rows), masks=torch.stack([t.masks[i] for t, i in sources]),
                      logits=torch.stack([t.logits[i] for t, i in sources]),
                      scores=torch.stack([t.scores.reshape(-1)[i] for t, i in sources]),
                      embeddings=rows_of("embeddings"), pointers=rows_of("pointers"))


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


class Origin(str, Enum):
    """Who started a track. The detector-driven retirement policy never retires a user's track."""

    DETECTOR = "detector"  # spawned by association from confirmed detections
    USER = "user"  # prompted by a user: the prompt queue, the API, or --prompt


class RepromptReason(str, Enum):
    DRIFT = "drift"  # the track's mask disagrees with its matched detection
    REACQUIRE = "reacquire"  # a lost or drifted track paired again by box, where it was last seen


class RetireReason(str, Enum):
    LOST = "lost"  # out of sight (low object score) and unmatched for retire_after frames
    UNCONFIRMED = "unconfirmed"  # no detection confirmed it for retire_unmatched_after detection frames
    DUPLICATE = "duplicate"  # it followed the same object as another track
    USER = "user"  # a user asked for it (prompt queue)


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start tracking a new object on this frame from a box or a mask prompt."""

    obj_id: int
    class_id: int  # the detection's class
    score: float  # the detection's confidence
    box: Box | None = None
    mask: torch.Tensor | None = None  # [H, W] bool at frame resolution; instead of ``box``
    origin: Origin = Origin.DETECTOR

    def __post_init__(self) -> None:
        if (self.box is None) == (self.mask is None):
            raise ValueError(f"Spawn({self.obj_id}) takes a box or a mask prompt, exactly one")


@dataclass(frozen=True, slots=True)
class Reprompt:
    """Prompt a tracked object again on this frame, from its detection's box."""

    obj_id: int
    box: Box
    reason: RepromptReason


@dataclass(frozen=True, slots=True)
class Retire:
    """Stop tracking an object and forget its memory."""

    obj_id: int
    reason: RetireReason


@dataclass(frozen=True, slots=True)
class Adopt:
    """An object association did not start (a user's) is followed from now on. Nothing to apply to
    the tracker: the record says where the track came from."""

    obj_id: int
    origin: Origin


@dataclass(frozen=True, slots=True)
class UserPrompt:
    """A user's prompt on the current frame: a box and/or points with labels (1 foreground,
    0 background). ``obj_id`` None starts a new object (the pipeline gives it the next free id); a
    tracked id is refined, and an id not tracked is started under that id unless ``refine`` (then it is
    refused: ``UnknownTrackError``). Checked here for form and finiteness; ``check_in_frame`` checks
    bounds."""

    obj_id: int | None = None
    box: Box | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    refine: bool = False  # obj_id must be tracked already (the preview's refinement of a selected track)

    def __post_init__(self) -> None:
        from engine.errors import ConfigError

        who = "a new object" if self.obj_id is None else f"object {self.obj_id}"
        if self.refine and self.obj_id is None:
            raise ConfigError("a refining prompt needs the id of the object it refines")
        if self.box is None and not self.points:
            raise ConfigError(f"prompt for {who}: give a box x1,y1,x2,y2 or points with labels")
        if self.box is not None:
            box = tuple(self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] \
                    or box[3] <= box[1]:
                raise ConfigError(f"prompt box for {who} must be x1,y1,x2,y2 with x2>x1, y2>y1 and finite "
                                  f"values; got {list(box)}")
        if len(self.points) != len(self.labels) or any(
                len(p) != 2 or not all(math.isfinite(v) for v in p) for p in self.points):
            raise ConfigError(f"prompt points for {who} must be finite (x, y) pairs, one label each; got "
                              f"{list(self.points)} and {list(self.labels)}")
        if any(label not in (0, 1) for label in self.labels):
            raise ConfigError(f"prompt labels for {who} must be 1 (foreground) or 0 (background); got "
                              f"{list(self.labels)}")

    def check_in_frame(self, height: int, width: int) -> None:
        """ConfigError unless the box and every point lie inside a ``width`` x ``height`` frame."""
        from engine.errors import ConfigError

        xs = ([self.box[0], self.box[2]] if self.box is not None else []) + [p[0] for p in self.points]
        ys = ([self.box[1], self.box[3]] if self.box is not None else []) + [p[1] for p in self.points]
        if min(xs) < 0 or max(xs) > width or min(ys) < 0 or max(ys) > height:
            where = f"box {list(self.box)}" if self.box is not None else f"points {list(self.points)}"
            raise ConfigError(f"prompt {where} lies outside the {width}x{height} frame; give pixel "
                              f"coordinates within 0..{width} and 0..{height}")


@dataclass(frozen=True, slots=True)
class Reidentify:
    """A track spawned on this frame is an object retired earlier (``engine.fuse.reid``): it goes on
    under the retired id. The tracker forgets ``spawned_id`` and follows ``obj_id`` from ``mask``."""

    obj_id: int  # the retired id it takes back
    spawned_id: int  # the id it was spawned with on this frame
    similarity: float  # the gallery's combined cosine similarity of the two
    mask: torch.Tensor  # [H, W] bool at frame resolution: the spawned object's mask on this frame


# What association decides and user prompts ask for: data the pipeline applies to the tracker.
Decision = Spawn | Reprompt | Retire | Adopt | UserPrompt | Reidentify


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
class AssociationEvidence:
    """What association measured on one frame that says how sure it was (``Fuser.association_evidence``).

    Host values only: association already reads its IoUs and object scores on the host to decide.
    """

    matched_iou: tuple[float, ...] = ()  # [K] mask IoU of each detection-track pair paired on this frame
    score_threshold: float = 0.5  # the confidence that decides a detection's fate (the fuser's spawn_conf)
    went_lost: int = 0  # tracks whose object score fell to <= 0 on this frame with no detection to match

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"AssociationEvidence.score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.went_lost < 0:
            raise ValueError(f"AssociationEvidence.went_lost must be >= 0, got {self.went_lost}")


@dataclass(frozen=True, slots=True)
class FrameEvidence:
    """What the engine computed on one frame that says how sure it was: the input of the data engine's
    uncertainty score (``engine.data.uncertainty``). The processor fills it when asked (a sink with
    ``wants_evidence``, or ``evidence=True``) from values it already holds: the tensors are the stages'
    own outputs, not copies, and stay on their device until a reader needs them (one host transfer).
    """

    frame: int  # Frame.index of the frame this evidence belongs to
    mask_logits: torch.Tensor  # [N, h, w] float: the tracker's low-res mask logits of its N objects (Tracks.logits)
    detection_scores: torch.Tensor  # [M] float in [0, 1]: every detection the detector returned (empty if it skipped)
    matched_iou: torch.Tensor  # [K] float in [0, 1]: mask IoU of each detection-track pair association matched
    # [N] float: the tracker's object-score logits (Tracks.scores; > 0: present); None where unknown
    object_scores: torch.Tensor | None = None
    score_threshold: float = 0.5  # the confidence that decides a detection's fate: the fuser's spawn_conf
    spawns: int = 0  # tracks started on this frame
    losses: int = 0  # tracks retired on this frame, or whose object score fell to <= 0 (object lost)
    reprompts: int = 0  # tracks re-prompted on this frame (drift corrections, re-acquisitions, user prompts)

    def __post_init__(self) -> None:
        if self.mask_logits.dim() != 3:
            raise ValueError(f"FrameEvidence.mask_logits must be [N, h, w], got {tuple(self.mask_logits.shape)}")
        for name in ("detection_scores", "matched_iou"):
            value = getattr(self, name)
            if value.dim() != 1:
                raise ValueError(f"FrameEvidence.{name} must be 1-D, got {tuple(value.shape)}")
        if self.object_scores is not None and tuple(self.object_scores.shape) != (self.mask_logits.shape[0],):
            raise ValueError(f"FrameEvidence.object_scores must be [{self.mask_logits.shape[0]}] like the mask "
                             f"logits, got {tuple(self.object_scores.shape)}")
        for name in ("spawns", "losses", "reprompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"FrameEvidence.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"FrameEvidence.score_threshold must be in [0, 1], got {self.score_threshold}")

    @staticmethod
    def empty(frame: int, *, score_threshold: float = 0.5) -> FrameEvidence:
        """Evidence of a frame with no objects and no detections (scores 0)."""
        return FrameEvidence(frame=frame, mask_logits=torch.zeros((0, 1, 1)), detection_scores=torch.zeros(0),
                             matched_iou=torch.zeros(0), score_threshold=score_threshold)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the pipeline hands out for every frame: the public, stable output."""

    frame: Frame
    instances: Instances
    times: StageTimes
    age_ms: float  # wall-clock ms from capture to this result being handed out
    overlay: torch.Tensor | None = None  # [H, W, 3] uint8 rendered picture, when a sink or the caller asked
    stats: SourceStats = field(default_factory=SourceStats)  # the stream's counters when this frame was handed out
    decisions: tuple[Decision, ...] = ()  # what was applied to the tracker on this frame, in order
    evidence: FrameEvidence | None = None  # how sure the engine was on this frame; None unless asked for
    # With a semantic stage: its map for this frame (``semantic.fresh`` False where it was reused from an
    # earlier frame), the panoptic map of the instances laid over its stuff, and the stuff segments
    # (pixels no instance covers). None without a semantic stage.
    semantic: SemanticMap | None = None
    panoptic: PanopticMap | None = None
    stuff: StuffSegments | None = None
    session: int = 0  # track ids are unique within one session; a server that restarts a stream counts up
    quality: int = 0  # the stream's degradation level on this frame (engine.fleet.degrade), 0 = full quality

    @property
    def index(self) -> int:
        return self.frame.index

