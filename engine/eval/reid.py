"""Re-identification on synthetic ground truth: scenes where objects leave for seconds and come back,
embedding doubles that are noisy functions of the true identity, and a run that applies the gallery to
the fuser's spawns and scores ids with TrackEval (tests/fuse/test_reid.py, benchmarks/reid.py).

Two ways to run it:
- ``record_trace`` + ``replay`` (the benchmark's sweep): the fuser runs once without its gallery, with
  the ground-truth doubles (``engine.eval.doubles``); the gallery is then replayed around the recorded
  run, for any number of settings: a track the fuser retires enters the gallery, and a track it spawns
  is looked up there on its first visible frame and, when matched, reported under the retired id from
  then on. Both the fuser's own ids and the re-identified ones are scored, so one run gives the before
  and the after.
- ``run_fused``: the gallery inside the fuser (``Fuser(reid=...)``), as the engine runs it, with a
  tracker double whose tracks carry the embedding doubles (``IdentityTracker``); the fuser's
  ``Reidentify`` decisions are judged against the truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.eval.doubles import DriftingTracker, NoisyTruthDetector
from engine.eval.fusion import frame_masks
from engine.eval.metrics import FrameMasks, Report, evaluate
from engine.fuse import Fuser, FuserConfig
from engine.fuse.reid import ReidConfig, ReidGallery, Signature, SignatureAccumulator
from engine.sources.synthetic import SceneObject, SyntheticScene
from engine.types import Reidentify, Retire, RetireReason, Spawn, Tracks

_RAMP_S = 1.0  # seconds an object takes to leave or enter the frame
_DEFAULT_REID = ReidConfig()


@dataclass(frozen=True, slots=True)
class _ExcursionObject(SceneObject):
    """A scene object that wanders over the middle and, during ``away`` intervals (seconds), is pushed
    out past the ``side`` edge: it slides out over ``_RAMP_S`` before an interval and back after it."""

    away: tuple[tuple[float, float], ...] = ()
    side: float = 1.0  # +1 right edge, -1 left edge
    push: float = 0.0  # pixels: enough to clear the frame from anywhere the object wanders

    def centre(self, t: float) -> tuple[float, float]:
        x, y = SceneObject.centre(self, t)
        out = 0.0
        for start, end in self.away:
            if t < start:
                out = max(out, 1.0 - (start - t) / _RAMP_S)
            elif t <= end:
                out = 1.0
            else:
                out = max(out, 1.0 - (t - end) / _RAMP_S)
        return x + self.side * self.push * max(0.0, out), y


class ReturningScene(SyntheticScene):
    """A synthetic scene (``SyntheticScene``: exact ground truth, same shapes and classes) whose objects
    play three roles by index k:
    - k % 3 == 0 stays in view;
    - k % 3 == 1 leaves by a side edge for 2-5 s (fully out of the frame), once or more, and comes back
      by the same edge at another height;
    - k % 3 == 2 is a look-alike, new to the scene: of the same class as object k - 1, it enters for the
      first time while k - 1 is away (part-way through its first absence), the hardest case for false
      re-identification; it then stays.
    Same constructor as ``SyntheticScene``.
    """

    def __init__(self, **kwargs) -> None:
        # filled in while SyntheticScene.__init__ makes the objects, in order
        self._away: dict[int, tuple[tuple[float, float], ...]] = {}
        self._classes: dict[int, int] = {}
        super().__init__(**kwargs)

    def _make_object(self, k: int, n: int, depth: int, rng: np.random.Generator) -> SceneObject:
        base = super()._make_object(k, n, depth, rng)
        reach = base.extent()
        w, h = self.width, self.height
        changes = {"ax": float(rng.uniform(0.3, 0.9) * max(w / 2 - reach, 0.0)),
                   "ay": float(rng.uniform(0.3, 0.9) * max(h / 2 - reach, 0.0))}
        length = self.frames / self.fps
        away: list[tuple[float, float]] = []
        if k % 3 == 1:
            start = float(rng.uniform(1.5, 4.0))
            while True:
                duration = float(rng.uniform(2.0, 5.0))
                if start + duration + _RAMP_S + 1.0 > length:
                    break
                away.append((start, start + duration))
                start += duration + 2 * _RAMP_S + float(rng.uniform(2.0, 5.0))
        elif k % 3 == 2:
            twin = self._away.get(k - 1, ())
            if twin:
                start, end = twin[0]
                enter = start + float(rng.uniform(0.2, 0.6)) * (end - start)
                changes["class_id"] = self._classes[k - 1]
            else:
                enter = float(rng.uniform(2.0, max(2.5, length / 2)))
            away.append((-1e9, enter))
        self._away[k] = tuple(away)
        self._classes[k] = changes.get("class_id", base.class_id)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(SceneObject)}
        return _ExcursionObject(**{**fields, **changes}, away=tuple(away), side=float(rng.choice([-1.0, 1.0])),
                                push=w + 2 * reach)

    def absences(self) -> dict[int, list[tuple[float, float]]]:
        """Object id -> the intervals (seconds) it spends out of the frame after having been seen."""
        return {o.id: [a for a in o.away if a[0] > -1e9] for o in self.objects if isinstance(o, _ExcursionObject)}


@dataclass(frozen=True, slots=True)
class EmbeddingNoise:
    """How the doubles' embeddings and pointers relate to the true identity.

    An object's true vector is ``sqrt(rho) * class_vector + sqrt(1 - rho) * own_vector`` (unit, random
    directions), so two objects of one class have cosine ``rho``. Each observation adds isotropic noise
    of norm about ``sigma / sqrt(visible fraction)``: an object half hidden or half out of the frame is
    seen less well. The cosine of one full-view observation with the truth is about 1 / sqrt(1 + sigma^2).
    """

    appearance_sigma: float = 0.6
    appearance_rho: float = 0.5  # same-class appearance similarity
    pointer_sigma: float = 0.5
    pointer_rho: float = 0.6  # SAM 2 pointers of one class are alike (they encode the object's mask)
    dim: int = 256  # SAM 2: 256-dimensional features and pointers


class IdentityEmbeddings:
    """Embedding and pointer doubles: noisy functions of each object's true identity (``EmbeddingNoise``).
    ``classes`` maps each true object id to its class. A track following no true object (a phantom) gets
    pure noise."""

    def __init__(self, classes: dict[int, int], noise: EmbeddingNoise = EmbeddingNoise(), *, seed: int = 0) -> None:
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self._truth = {kind: self._identities(classes, rho)
                       for kind, rho in (("appearance", noise.appearance_rho), ("pointer", noise.pointer_rho))}

    def _identities(self, classes: dict[int, int], rho: float) -> dict[int, np.ndarray]:
        shared = {c: _random_unit(self.noise.dim, self.rng) for c in sorted(set(classes.values()))}
        return {k: _unit(np.sqrt(rho) * shared[c] + np.sqrt(1 - rho) * _random_unit(self.noise.dim, self.rng))
                for k, c in sorted(classes.items())}

    def observe(self, true_id: int | None, visible: float) -> tuple[np.ndarray, np.ndarray]:
        """(appearance, pointer) of one observation of object ``true_id``, ``visible`` in (0, 1]."""
        out = []
        for kind, sigma in (("appearance", self.noise.appearance_sigma), ("pointer", self.noise.pointer_sigma)):
            if true_id is None:
                out.append(_random_unit(self.noise.dim, self.rng))
                continue
            scale = sigma / np.sqrt(max(visible, 0.05))
            noise = self.rng.standard_normal(self.noise.dim) / np.sqrt(self.noise.dim)
            out.append(_unit(self._truth[kind][true_id] + scale * noise))
        return out[0], out[1]


class IdentityTracker(DriftingTracker):
    """``DriftingTracker`` whose tracks carry embedding and pointer doubles (``IdentityEmbeddings``) of the
    object each follows, seen as well as the fraction of it in view. ``born`` keeps the object each id
    was first prompted onto, after the id is gone."""

    def __init__(self, scene: SyntheticScene, embeddings: IdentityEmbeddings, *, drift_px: float = 0.0) -> None:
        super().__init__(scene, drift_px=drift_px)
        self.embeddings = embeddings
        self.born: dict[int, int | None] = {}
        self._whole = _whole_areas(scene)

    def add_object(self, obj_id: int, **prompt) -> Tracks:
        out = super().add_object(obj_id, **prompt)
        self.born.setdefault(obj_id, self.objects[obj_id])
        return out

    def _tracks(self, ids: list[int]) -> Tracks:
        tracks = super()._tracks(ids)
        dim = self.embeddings.noise.dim
        embeddings, pointers = np.zeros((len(ids), dim), np.float32), np.zeros((len(ids), dim), np.float32)
        for k, (obj_id, mask) in enumerate(zip(ids, tracks.masks)):
            true_id, area = self.objects.get(obj_id), int(mask.sum())
            if area:  # an object out of sight has nothing to describe
                whole = self._whole.get(true_id, 0)
                embeddings[k], pointers[k] = self.embeddings.observe(true_id, min(1.0, area / whole) if whole else 1.0)
        return dataclasses.replace(tracks, embeddings=torch.from_numpy(embeddings), pointers=torch.from_numpy(pointers))


def _whole_areas(scene: SyntheticScene) -> dict[int, int]:
    """Each object's whole area (its largest in-frame area over the clip): a sliver at the frame's edge is
    a small fraction of it, though all of what is inside the frame is visible."""
    return {o.id: max(int(scene.shape_mask(o.id, i).sum()) for i in range(scene.frames)) for o in scene.objects}


@dataclass(slots=True)
class ReidCounts:
    """What the gallery did, judged by the ground truth of each spawned track."""

    returns: int = 0  # spawns of an object whose earlier track was retired
    recovered: int = 0  # ... that got one of its retired ids back
    new_objects: int = 0  # spawns of an object with no retired track (or of a phantom)
    queries: int = 0  # spawns looked up
    false: int = 0  # spawns given the id of another object's track

    @property
    def recovery_rate(self) -> float:
        return self.recovered / self.returns if self.returns else 1.0

    @property
    def false_rate(self) -> float:
        return self.false / self.queries if self.queries else 0.0


@dataclass(slots=True)
class ReidRun:
    before: Report | None  # the fuser's own ids (None: not scored)
    after: Report | None  # with the gallery's re-identifications (None: no gallery, or not scored)
    counts: ReidCounts
    gallery_peak: int = 0  # most entries held at once
    log: list[str] = field(default_factory=list)  # one line per lookup: what happened


@dataclass(frozen=True, slots=True)
class _Observation:
    """One output instance of one frame, as the gallery's caller sees it."""

    track_id: int  # the fuser's id
    true_id: int | None  # the object the doubles' tracker follows with it (None: a phantom)
    class_id: int  # the fuser's class for the track on this frame
    box: tuple[float, float, float, float]
    visible: float  # fraction of the object's whole shape visible (hidden or outside the frame: not)


@dataclass(frozen=True, slots=True)
class _TraceFrame:
    live: frozenset[int]  # the fuser's live track ids after this frame
    observations: tuple[_Observation, ...]  # in output order
    output: FrameMasks  # the output masks under the fuser's ids
    truth: FrameMasks


@dataclass(frozen=True, slots=True)
class ReidTrace:
    """One fuser run over a scene with everything the gallery needs, recorded once so that many gallery
    settings and embedding noises can be replayed on the same run (``record_trace``, ``replay``)."""

    fps: float
    classes: dict[int, int]  # true object id -> class id
    seed: int
    frames: tuple[_TraceFrame, ...]


def record_trace(scene: SyntheticScene, *, fuser: FuserConfig | None = None, detector_faults: dict | None = None,
                 drift_px: float = 0.0, seed: int = 0) -> ReidTrace:
    """Run the fuser with ground-truth doubles over ``scene`` and record its output, its tracks' life
    cycle, and which object each output instance follows and how much of it is visible.

    Args:
        fuser: the fusion policy; by default ``FuserConfig`` with ``retire_after`` at 1.5 s of frames,
            shorter than every absence of a ``ReturningScene``.
        detector_faults: ``NoisyTruthDetector`` faults (miss, false_positive, jitter_px); clean if None.
    """
    from engine.pipeline import Pipeline
    from engine.sources.synthetic import SyntheticSource

    config = fuser or FuserConfig(retire_after=max(1, round(1.5 * scene.fps)))
    detector = NoisyTruthDetector(scene, seed=seed, **(detector_faults or {}))
    tracker = DriftingTracker(scene, drift_px=drift_px)
    fusion = Fuser(config, names=scene.class_names, reid=None)  # the gallery is replayed around it
    size = (scene.height, scene.width)
    whole = _whole_areas(scene)
    frames = []
    for result in Pipeline(SyntheticSource(scene), detector=detector, tracker=tracker, fuser=fusion):
        i, instances = result.frame.index, result.instances
        masks = instances.masks.cpu().numpy()
        observations = []
        for obj_id, box, mask in zip(instances.ids.tolist(), instances.boxes.tolist(), masks):
            true_id = tracker.objects.get(obj_id)
            area = whole.get(true_id, 0)
            observations.append(_Observation(
                track_id=obj_id, true_id=true_id, class_id=int(np.argmax(fusion.tracks[obj_id].class_scores)),
                box=tuple(box), visible=min(1.0, float(mask.sum()) / area) if area else 1.0))
        gt = scene.ground_truth(i)
        frames.append(_TraceFrame(live=frozenset(fusion.tracks), observations=tuple(observations),
                                  output=frame_masks(instances.ids.tolist(), masks, size),
                                  truth=frame_masks(gt.ids, gt.masks, size)))
    return ReidTrace(fps=scene.fps, classes={o.id: o.class_id for o in scene.objects}, seed=seed,
                     frames=tuple(frames))


def replay(trace: ReidTrace, reid: ReidConfig | None, *, noise: EmbeddingNoise = EmbeddingNoise(),
           good_visible: float = 0.5, score: bool = True) -> ReidRun:
    """Apply a gallery (``reid``; None: none) to a recorded run, with embedding doubles drawn with
    ``noise`` (the same draws for the same trace and noise), and score the ids before and after with
    TrackEval (``score=False``: only count what the gallery did, which is much cheaper).

    A track's signature pools the observations where at least ``good_visible`` of its object is in view.
    """
    gallery = ReidGallery(reid, embedding_dim=noise.dim, pointer_dim=noise.dim) if reid is not None else None
    embeddings = IdentityEmbeddings(trace.classes, noise, seed=trace.seed + 1000)
    reidentify = _Reidentifier(gallery, embeddings, good_visible=good_visible)
    truth, before, after = [], [], []
    for i, frame in enumerate(trace.frames):
        reported = reidentify(i, i / trace.fps, frame)
        truth.append(frame.truth)
        before.append(frame.output)
        after.append(dataclasses.replace(frame.output, ids=tuple(reported)))
    return ReidRun(before=evaluate(truth, before) if score else None,
                   after=evaluate(truth, after) if score and reid is not None else None,
                   counts=reidentify.counts, gallery_peak=reidentify.peak, log=reidentify.log)


def run_fused(scene: SyntheticScene, reid: ReidConfig | None, *, noise: EmbeddingNoise = EmbeddingNoise(),
              seed: int = 0, fuser: FuserConfig | None = None, detector_faults: dict | None = None,
              score: bool = True) -> ReidRun:
    """``scene`` through a ``Pipeline`` whose ``Fuser`` holds the gallery (``reid``; None: off), with the
    detector double and an ``IdentityTracker``; ``before`` is None (run it again with ``reid=None``), and
    ``after`` scores the ids the engine gave. Counted like ``replay``: a spawn is a return when its
    object had a track retired as lost; a re-identification is right when both ids were born on one object.
    """
    from engine.pipeline import Pipeline
    from engine.sources.synthetic import SyntheticSource

    config = fuser or FuserConfig(retire_after=max(1, round(1.5 * scene.fps)))
    tracker = IdentityTracker(scene, IdentityEmbeddings({o.id: o.class_id for o in scene.objects}, noise,
                                                        seed=seed + 1000))
    fusion = Fuser(config, names=scene.class_names, reid=reid)
    detector = NoisyTruthDetector(scene, seed=seed, **(detector_faults or {}))
    size = (scene.height, scene.width)
    counts, log, lost_objects, peak = ReidCounts(), [], set(), 0
    truth, output = [], []
    for result in Pipeline(SyntheticSource(scene), detector=detector, tracker=tracker, fuser=fusion):
        born = tracker.born
        renamed = {d.spawned_id: d.obj_id for d in result.decisions if isinstance(d, Reidentify)}
        for d in result.decisions:
            if isinstance(d, Spawn):
                returning = born.get(d.obj_id) is not None and born[d.obj_id] in lost_objects
                old = renamed.get(d.obj_id)
                right = old is not None and born.get(old) == born.get(d.obj_id)
                counts.queries += 1
                counts.returns += int(returning)
                counts.new_objects += int(not returning)
                counts.recovered += int(returning and right)
                counts.false += int(old is not None and not right)
                log.append(f"frame {result.index}: track {d.obj_id} (object {born.get(d.obj_id)}, "
                           f"{'returning' if returning else 'new'}) -> {'new id' if old is None else f'id {old}'}"
                           f"{' FALSE' if old is not None and not right else ''}")
            elif isinstance(d, Retire) and d.reason is RetireReason.LOST and born.get(d.obj_id) is not None:
                lost_objects.add(born[d.obj_id])
        if fusion.reid is not None and fusion.reid.gallery is not None:
            peak = max(peak, len(fusion.reid.gallery))
        if score:
            gt, instances = scene.ground_truth(result.index), result.instances
            truth.append(frame_masks(gt.ids, gt.masks, size))
            output.append(frame_masks(instances.ids.tolist(), instances.masks.cpu().numpy(), size))
    return ReidRun(before=None, after=evaluate(truth, output) if score else None, counts=counts,
                   gallery_peak=peak, log=log)


def evaluate_reid(scene: SyntheticScene, *, reid: ReidConfig | None = _DEFAULT_REID,
                  noise: EmbeddingNoise = EmbeddingNoise(), seed: int = 0, good_visible: float = 0.5,
                  **trace_options) -> ReidRun:
    """``record_trace`` then ``replay``: one scene, one gallery setting."""
    return replay(record_trace(scene, seed=seed, **trace_options), reid, noise=noise, good_visible=good_visible)


class _Reidentifier:
    """The gallery applied to a fuser's life cycle, frame by frame (see the module docstring)."""

    def __init__(self, gallery: ReidGallery | None, embeddings: IdentityEmbeddings, *, good_visible: float) -> None:
        self.gallery, self.embeddings = gallery, embeddings
        self.good_visible = good_visible
        self.accumulators: dict[int, SignatureAccumulator] = {}
        self.rename: dict[int, int] = {}  # fuser id -> reported id
        self.pending: set[int] = set()  # spawned, not yet looked up (not yet visible)
        self.truth_of_reported: dict[int, int | None] = {}  # reported id -> true object it followed
        self.retired_objects: set[int] = set()  # true objects that had a track retired
        self.counts = ReidCounts()
        self.peak = 0
        self.log: list[str] = []
        self._live: frozenset[int] = frozenset()

    def __call__(self, index: int, time: float, frame: _TraceFrame) -> list[int]:
        """Update with one frame of the fuser's output; returns the reported id of each instance."""
        for gone in sorted(self._live - frame.live):
            self._retire(gone)
        self.pending |= frame.live - self._live
        self._live = frame.live
        vectors = {o.track_id: self.embeddings.observe(o.true_id, o.visible) for o in frame.observations}
        self._lookup(index, time, [o for o in frame.observations if o.track_id in self.pending], vectors)
        for o in frame.observations:
            acc = self.accumulators.setdefault(o.track_id, SignatureAccumulator())
            embedding, pointer = vectors[o.track_id]
            acc.observe(class_id=o.class_id, box=o.box, time=time, good=o.visible >= self.good_visible,
                        embedding=embedding, pointer=pointer)
            self.truth_of_reported[self.rename.get(o.track_id, o.track_id)] = o.true_id
        if self.gallery is not None:
            self.peak = max(self.peak, len(self.gallery))
        return [self.rename.get(o.track_id, o.track_id) for o in frame.observations]

    def _retire(self, track_id: int) -> None:
        reported = self.rename.pop(track_id, track_id)
        acc = self.accumulators.pop(track_id, None)
        self.pending.discard(track_id)
        signature = acc.signature() if acc is not None else None
        if (true_id := self.truth_of_reported.get(reported)) is not None:
            self.retired_objects.add(true_id)
        if self.gallery is not None and signature is not None:
            self.gallery.retire(reported, signature)

    def _lookup(self, index: int, time: float, spawned: list[_Observation], vectors: dict) -> None:
        if not spawned:
            return
        self.pending -= {o.track_id for o in spawned}
        signatures = [Signature(embedding=vectors[o.track_id][0], pointer=vectors[o.track_id][1], class_id=o.class_id,
                                box=o.box, time=time) for o in spawned]
        matches = self.gallery.match(signatures) if self.gallery is not None else [None] * len(spawned)
        for o, match in zip(spawned, matches):
            returning = o.true_id is not None and o.true_id in self.retired_objects
            right = match is not None and o.true_id is not None and self.truth_of_reported.get(match) == o.true_id
            self.counts.queries += 1
            self.counts.returns += int(returning)
            self.counts.new_objects += int(not returning)
            self.counts.recovered += int(returning and right)
            self.counts.false += int(match is not None and not right)
            if match is not None:
                self.rename[o.track_id] = match
            verdict = "" if match is None or right else " FALSE"
            self.log.append(f"frame {index}: track {o.track_id} (object {o.true_id}, "
                            f"{'returning' if returning else 'new'}) -> "
                            f"{'new id' if match is None else f'id {match}'}{verdict}")


def _random_unit(dim: int, rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.standard_normal(dim))


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)
