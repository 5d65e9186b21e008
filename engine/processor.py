"""The per-frame processor that both streaming loops use (``Pipeline``: one stream, one frame a call;
``MultiStreamPipeline``: one frame of each of several streams a call), and the lifecycle they share.

A call runs the stages of ``engine.types.Stage`` in their order, each timed on one ``StageClock``:

- detect: the frames go to the compute device, then through ONE detector call (every k-th call);
- segment: with a semantic segmenter, each stream's ``SegmentCadence`` says whether its frame is due
  (every k-th frame index); the due frames of one size go through ONE segmenter call, and the others
  get their stream's last map again (``SemanticMap.fresh`` False);
- track: each stream's tracker steps (streams whose trackers share a model share one image-encoder
  batch), then the stream's queued user prompts are applied to the frame just stepped;
- fuse: association decides (``Fusion.associate``), the decisions are applied to the tracker, the
  retirement policy decides on the updated tracks (``Fusion.retire``) and its decisions are applied,
  then ``Fusion.resolve`` makes the frame's non-overlapping instances. Applying a decision is tracker
  work and is timed as "track";
- refine: with a refiner (``engine.refine``, ``--refine``), the instances' boundaries are refined on the
  frame; then, with a semantic map, the panoptic resolution (``engine.fuse.PanopticFusion``) lays the
  final instances over its stuff (fusion work, timed as "fuse");
- render: the overlay picture (the stuff layer under the instances), when asked for.

Asked for (``evidence=True``; the loops ask when a sink has ``wants_evidence``), each result also carries
its ``FrameEvidence``: the tracker's final logits and object scores, the detector's scores, what
association measured (``ReportsAssociation``) and the frame's decisions counted. It is built from values
already at hand, references and host numbers: no copy, no device sync (a reader transfers it once).

Nothing below this module holds a tracker: this is the one place that prompts it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from engine.errors import ConfigError, StreamsegError, UnknownTrackError
from engine.interfaces import Detector, Fusion, PromptableTracker, Refiner, ReportsAssociation
from engine.metrics import LatencyTable
from engine.prompts import PromptQueue
from engine.render import draw
from engine.runtime.device import StageClock
from engine.sinks.base import Sink, SinkThread
from engine.sources.base import Source
from engine.types import (Adopt, AssociationEvidence, Decision, Detections, Frame, FrameEvidence, FrameResult, Instances, PanopticMap, Reidentify,
                          Reprompt, Retire, SemanticMap, Spawn, Stage, StageTimes, StuffSegments, Tracks, UserPrompt)

if TYPE_CHECKING:
    from engine.overlap import Detected
    from engine.segment import SegmentCadence, SemanticSegmenter


@dataclass(eq=False)
class Stream:
    """One stream's own state: its source, its tracker memory, its fusion, its prompts and sinks.

    Streams of one multi-stream pipeline should build their trackers on one shared model (see
    ``StreamingTracker.step_streams``).
    """

    source: Source
    tracker: PromptableTracker | None = None
    fusion: Fusion | None = None  # None: chosen by ``default_fusion``
    sinks: Sequence[Sink] = ()
    prompts: PromptQueue = field(default_factory=PromptQueue)
    latency: LatencyTable = field(default_factory=LatencyTable)
    frames: int = 0  # results handed out
    late: int = 0  # frames a multi-stream pipeline dropped for being older than its budget
    max_id: int = 0  # the largest object id this stream's tracker has held: a new user object gets the next
    detect_every: int | None = None  # the detector on every k-th frame of this stream; None: the loop's
    max_frames: int | None = None  # this stream ends after this many results; None: the loop's limit
    session: int = 0  # carried by its results (FrameResult.session): +1 each time a server restarts the stream
    quality: int = 0  # carried by its results (FrameResult.quality): the degradation level, 0 = full quality
    cadence: SegmentCadence | None = None  # when the semantic stage runs on this stream (set on its first frame)


def default_fusion(detector: Detector | None, tracker: PromptableTracker | None) -> Fusion:
    """What joins the networks when the caller named no fusion: the detector-driven policy with its
    defaults for both networks, the user's prompts for a tracker alone, the detector's instances
    for a detector alone, and no instances without a network."""
    from engine.fuse import DetectionsOnly, Fuser, NoInstances, TracksOnly

    if tracker is not None:
        return Fuser(names=detector.names) if detector is not None else TracksOnly()
    return DetectionsOnly() if detector is not None else NoInstances()


def check_stream(stream: Stream, detector: Detector | None, *, label: str = "the pipeline") -> None:
    """ConfigError when a stream's parts do not fit together; fills in its default fusion."""
    if stream.tracker is not None and not isinstance(stream.tracker, PromptableTracker):
        raise ConfigError(f"{label}: the tracker {type(stream.tracker).__name__} does not offer step, "
                          "add_object, remove_object and random_weights (engine.interfaces.PromptableTracker)")
    if detector is not None and not isinstance(detector, Detector):
        raise ConfigError(f"{label}: the detector {type(detector).__name__} does not offer names, "
                          "random_weights, device and a call on frames (engine.interfaces.Detector)")
    if stream.fusion is None:
        stream.fusion = default_fusion(detector, stream.tracker)
    if not isinstance(stream.fusion, Fusion):
        raise ConfigError(f"{label}: {type(stream.fusion).__name__} does not offer associate, retire and "
                          "resolve (engine.interfaces.Fusion)")


@dataclass(frozen=True, slots=True)
class SharedStages:
    """The stages every stream of a pipeline shares: each runs once per processor call, on the frames of
    all the streams in it (one batch per multi-stream tick).

    ``segmenter``: the semantic stage (``engine.segment.load_segmenter``, or any object with its
    ``labels``, ``every`` and call on frames); it runs on every ``segmenter.every``-th frame of each stream.
    ``refiner``: boundary refinement of every frame's final instances (``engine.refine.BoundaryRefiner``).
    """

    detector: Detector | None = None
    segmenter: SemanticSegmenter | None = None
    refiner: Refiner | None = None

    @classmethod
    def of(cls, shared: SharedStages | None, detector: Detector | None) -> SharedStages:
        """``shared``, or the stages a loop was given one by one (its ``detector=``)."""
        if shared is None:
            return cls(detector=detector)
        if detector is not None:
            raise ConfigError("give the detector once: as detector= or in shared=")
        return shared


@dataclass(slots=True, eq=False)
class _Work:
    """One frame on its way through the stages."""

    stream: Stream
    frame: Frame
    detections: Detections | None = None
    semantic: SemanticMap | None = None
    tracks: Tracks | None = None
    instances: Instances | None = None
    panoptic: PanopticMap | None = None
    stuff: StuffSegments | None = None
    overlay: torch.Tensor | None = None
    decisions: list[Decision] = field(default_factory=list)
    evidence: FrameEvidence | None = None
    ahead: Future[Detected] | None = None  # its detection, run ahead on the detector's thread (engine.overlap)
    detect_ms: float = 0.0  # the detector's own run on this frame, when run ahead


class FrameProcessor:
    """Runs frames through the stages; see the module docstring.

    Args:
        shared: the stages every stream shares (the detector, the semantic segmenter).
        device: where frames and networks run.
        detect_every: run the detector on every k-th call (trackers carry the frames between).
        render: render overlays (``FrameResult.overlay``).
        evidence: fill ``FrameResult.evidence`` (module docstring).
    """

    def __init__(self, shared: SharedStages, *, device: torch.device, detect_every: int = 1,
                 render: bool = False, evidence: bool = False) -> None:
        if detect_every < 1:
            raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
        self.shared = shared
        self.detector = shared.detector
        self.segmenter = shared.segmenter
        self.refiner = shared.refiner
        self.panoptic = None
        if self.segmenter is not None:
            from engine.fuse import PanopticFusion

            labels = self.segmenter.labels
            self.panoptic = PanopticFusion(names=labels.names, is_thing=labels.is_thing)
        self.device = device
        self.detect_every = detect_every
        self.render = render
        self.evidence = evidence
        self.calls = 0
        steps: dict[Stage, Callable[[list[_Work], StageClock], None]] = {
            Stage.DETECT: self._detect, Stage.SEGMENT: self._segment, Stage.TRACK: self._track,
            Stage.FUSE: self._fuse, Stage.REFINE: self._refine, Stage.RENDER: self._render,
        }
        missing = [s.value for s in Stage if s is not Stage.DECODE and s not in steps]
        if missing:
            raise NotImplementedError(f"no processing step for stage(s) {', '.join(missing)}")
        # Decoding happens on the sources' threads; every other stage runs here, in Stage order.
        self._steps = [(stage, steps[stage]) for stage in Stage if stage is not Stage.DECODE]

    def process(self, batch: Sequence[tuple[Stream, Frame]],
                ahead: Sequence[Future[Detected] | None] | None = None) -> list[FrameResult]:
        """One frame of each stream in ``batch`` through every stage. The call's stage times are shared
        by the frames it carried: each frame waited for them all.

        ``ahead``: per frame, its detection already submitted to another thread (``engine.overlap``), which
        the detect stage waits for instead of running the detector; its ``detect`` time is then the
        detector's own run and ``overlapped`` the part of it this call did not wait for."""
        clock = StageClock(self.device)
        work = [_Work(stream, upload(frame, self.device)) for stream, frame in batch]
        for w, future in zip(work, ahead or (), strict=False):
            w.ahead = future
        for stage, step in self._steps:
            step(work, clock)
            clock.mark(stage)
        stages, total = clock.finish()
        self.calls += 1
        results = []
        for w in work:
            own = {**stages, Stage.DECODE: w.frame.decode_ms}
            overlapped = 0.0
            if w.ahead is not None:
                waited = stages.get(Stage.DETECT.value, 0.0)
                own[Stage.DETECT] = w.detect_ms
                overlapped = max(0.0, w.detect_ms - waited)
            times = StageTimes.of(own, total=total, overlapped=overlapped)
            stats = dataclasses.replace(w.stream.source.stats, late=w.stream.late)
            results.append(FrameResult(frame=w.frame, instances=w.instances, times=times, overlay=w.overlay,
                                       age_ms=(time.time() - w.frame.capture_time) * 1000.0, stats=stats,
                                       decisions=tuple(w.decisions), semantic=w.semantic, panoptic=w.panoptic,
                                       stuff=w.stuff, session=w.stream.session, quality=w.stream.quality,
                                       evidence=w.evidence))
        return results

    # -- the stages, in Stage order ---------------------------------------------------------------

    def detect_due(self, stream: Stream, position: int = 0) -> bool:
        """Whether the detector runs on the stream's frame ``position`` frames after its next result.
        Counted per stream, so a stream absent from some calls (nothing new from its source) still gets
        the detector on every k-th of its own frames."""
        return (stream.frames + position) % (stream.detect_every or self.detect_every) == 0

    def _detect(self, work: list[_Work], clock: StageClock) -> None:
        if self.detector is None:
            return
        for w in work:
            if w.ahead is not None:
                detected = w.ahead.result()
                w.detections, w.detect_ms = detected.detections, detected.run_ms
        due = [w for w in work if w.ahead is None and self.detect_due(w.stream)]
        if not due:
            return
        for w, dets in zip(due, self.detector([w.frame.image for w in due]), strict=True):
            w.detections = dets

    def _segment(self, work: list[_Work], clock: StageClock) -> None:
        if self.segmenter is None:
            return
        due: dict[tuple[int, int], list[_Work]] = {}  # frame size -> the due frames of that size
        for w in work:
            if w.stream.cadence is None:
                from engine.segment import SegmentCadence

                w.stream.cadence = SegmentCadence(self.segmenter.every)
            if w.stream.cadence.due(w.frame.index, w.frame.height, w.frame.width):
                due.setdefault((w.frame.height, w.frame.width), []).append(w)
            else:
                w.semantic = w.stream.cadence.reuse()
        for group in due.values():
            maps = self.segmenter([w.frame.image for w in group], frame_indices=[w.frame.index for w in group])
            for w, semantic in zip(group, maps, strict=True):
                w.semantic = w.stream.cadence.store(semantic)

    def _track(self, work: list[_Work], clock: StageClock) -> None:
        for w, tracks in zip(work, step_trackers([w.stream.tracker for w in work], [w.frame.image for w in work])):
            w.tracks = tracks
            if tracks is not None:
                w.stream.max_id = max([w.stream.max_id, *tracks.obj_ids])
            w.tracks = self._apply_user_prompts(w)

    def _fuse(self, work: list[_Work], clock: StageClock) -> None:
        for w in work:
            fusion = w.stream.fusion
            decided = fusion.associate(w.frame, w.detections, w.tracks)
            with clock.section(Stage.TRACK):
                w.tracks = apply_decisions(w.stream, decided, w.tracks)
            retired = fusion.retire(w.frame, w.tracks)
            with clock.section(Stage.TRACK):
                w.tracks = apply_decisions(w.stream, retired, w.tracks)
            w.instances = fusion.resolve(w.frame, w.detections, w.tracks)
            w.decisions += decided + retired
            if self.evidence:
                w.evidence = frame_evidence(w.frame, w.detections, w.tracks, w.decisions, fusion)

    def _refine(self, work: list[_Work], clock: StageClock) -> None:
        for w in work:
            if self.refiner is not None:
                w.instances = self.refiner(w.frame.image, w.instances)
            if w.semantic is not None:
                with clock.section(Stage.FUSE):
                    w.panoptic, w.stuff = self.panoptic(w.frame.index, w.instances, w.semantic)

    def _render(self, work: list[_Work], clock: StageClock) -> None:
        if self.render:
            colors = self.segmenter.labels.colors if self.segmenter is not None else ()
            for w in work:
                w.overlay = draw(w.frame.image, w.instances, stuff=w.stuff, stuff_colors=colors)

    def _apply_user_prompts(self, w: _Work) -> Tracks | None:
        """The stream's queued prompts applied to the frame just stepped; each future gets the object's
        id, or the error that refused the prompt (the stream goes on)."""
        requests = w.stream.prompts.drain()
        if not requests:
            return w.tracks
        outputs: list[Tracks] = []
        removed: list[int] = []
        for request, future in requests:
            if not future.set_running_or_notify_cancel():
                continue  # withdrawn by whoever asked (the preview's request timed out)
            try:
                if w.stream.tracker is None:
                    raise ConfigError("this stream has no tracker: prompts need one")
                obj_id = _apply_user_request(w, request, outputs, removed)
            except StreamsegError as exc:
                future.set_exception(exc)
            else:
                w.decisions.append(request if request.obj_id is not None or isinstance(request, Retire)
                                   else dataclasses.replace(request, obj_id=obj_id))
                future.set_result(obj_id)
        return w.tracks.updated(outputs, removed=removed) if w.tracks is not None else None


def frame_evidence(frame: Frame, detections: Detections | None, tracks: Tracks | None,
                   decisions: Sequence[Decision], fusion: Fusion) -> FrameEvidence:
    """The frame's evidence from the stages' outputs (references, no copy) and its decisions counted."""
    device = frame.image.device
    if isinstance(fusion, ReportsAssociation):
        association = fusion.association_evidence()
    else:
        association = AssociationEvidence()
    spawns = sum(isinstance(d, Spawn) for d in decisions)
    reprompts = sum(isinstance(d, (Reprompt, UserPrompt)) for d in decisions)  # a user's prompt corrects too
    retired = sum(isinstance(d, Retire) for d in decisions)
    empty = torch.zeros(0, device=device)
    return FrameEvidence(
        frame=frame.index,
        mask_logits=tracks.logits if tracks is not None else torch.zeros((0, 1, 1), device=device),
        object_scores=tracks.scores.reshape(-1) if tracks is not None else empty,
        detection_scores=detections.scores if detections is not None else empty,
        matched_iou=torch.tensor(association.matched_iou, dtype=torch.float32),
        score_threshold=association.score_threshold, spawns=spawns, reprompts=reprompts,
        losses=retired + association.went_lost)


def _apply_user_request(w: _Work, request: UserPrompt | Retire, outputs: list[Tracks], removed: list[int]) -> int:
    tracker, stream = w.stream.tracker, w.stream
    live = set(w.tracks.obj_ids if w.tracks is not None else ()) - set(removed)
    live |= {i for out in outputs for i in out.obj_ids}
    if isinstance(request, Retire):
        if request.obj_id not in live:
            raise UnknownTrackError(f"cannot remove object {request.obj_id}: it is not tracked")
        tracker.remove_object(request.obj_id)
        removed.append(request.obj_id)
        return request.obj_id
    if request.refine and request.obj_id not in live:
        raise UnknownTrackError(f"cannot refine object {request.obj_id}: it is not tracked (tracked: "
                                f"{sorted(live) or 'none'})")
    request.check_in_frame(w.frame.height, w.frame.width)
    obj_id = request.obj_id if request.obj_id is not None else stream.max_id + 1
    out = tracker.add_object(obj_id, box=None if request.box is None else list(request.box),
                             points=[list(p) for p in request.points] or None,
                             labels=list(request.labels) or None)
    if obj_id in removed:
        removed.remove(obj_id)
    outputs.append(out)
    stream.max_id = max(stream.max_id, obj_id)
    return obj_id


def apply_decisions(stream: Stream, decisions: Sequence[Decision], tracks: Tracks | None) -> Tracks | None:
    """Apply association's decisions to the stream's tracker; returns ``tracks`` as they are after them
    (a prompt's answer replaces the object's propagated output on this frame)."""
    if not decisions:
        return tracks
    tracker = stream.tracker
    if tracker is None or tracks is None:
        raise ConfigError(f"{type(stream.fusion).__name__} decided {type(decisions[0]).__name__} for a stream "
                          "without a tracker")
    outputs: list[Tracks] = []
    removed: list[int] = []
    for decision in decisions:
        if isinstance(decision, Spawn):
            if decision.box is not None:
                outputs.append(tracker.add_object(decision.obj_id, box=list(decision.box)))
            else:
                outputs.append(tracker.add_object(decision.obj_id, mask=decision.mask))
            stream.max_id = max(stream.max_id, decision.obj_id)
        elif isinstance(decision, Reprompt):
            outputs.append(tracker.add_object(decision.obj_id, box=list(decision.box)))
        elif isinstance(decision, Retire):
            tracker.remove_object(decision.obj_id)
            removed.append(decision.obj_id)
        elif isinstance(decision, Reidentify):
            # The spawned object's slot goes; the retired id starts again from the same mask.
            tracker.remove_object(decision.spawned_id)
            removed.append(decision.spawned_id)
            outputs.append(tracker.add_object(decision.obj_id, mask=decision.mask))
            stream.max_id = max(stream.max_id, decision.obj_id)
        elif not isinstance(decision, Adopt):  # an adoption is a record: nothing changes in the tracker
            raise TypeError(f"association cannot decide {type(decision).__name__}")
    return tracks.updated(outputs, removed=removed)


def step_trackers(trackers: Sequence[PromptableTracker | None],
                  images: Sequence[torch.Tensor]) -> list[Tracks | None]:
    """Every stream's tracker on its frame (None where a stream has none). Trackers that share a model
    and offer ``step_streams`` (``StreamingTracker``) share one image-encoder batch."""
    tracks: list[Tracks | None] = [None] * len(trackers)
    groups: dict[int, list[int]] = {}
    for i, tracker in enumerate(trackers):
        if tracker is not None:
            shared = getattr(tracker, "model", None) if hasattr(type(tracker), "step_streams") else None
            groups.setdefault(id(shared) if shared is not None else id(tracker), []).append(i)
    for members in groups.values():
        if len(members) == 1:
            tracks[members[0]] = trackers[members[0]].step(images[members[0]])
            continue
        stepped = type(trackers[members[0]]).step_streams([trackers[i] for i in members],
                                                         [images[i] for i in members])
        for i, result in zip(members, stepped):
            tracks[i] = result
    return tracks


_copy_streams: dict[torch.device, torch.cuda.Stream] = {}


def upload(frame: Frame, device: torch.device) -> Frame:
    """``frame`` with its image on ``device``. On CUDA the image is pinned and copied on a side stream,
    and the compute stream waits for that copy on the GPU, not the host: no host sync per frame."""
    if frame.image.device == device:
        return frame
    if device.type != "cuda":
        return dataclasses.replace(frame, image=frame.image.to(device))
    copy_stream = _copy_streams.setdefault(device, torch.cuda.Stream(device=device))
    pinned = frame.image.pin_memory()
    with torch.cuda.stream(copy_stream):
        image = pinned.to(device, non_blocking=True)
    compute = torch.cuda.current_stream(device)
    compute.wait_stream(copy_stream)
    image.record_stream(compute)  # the caching allocator must not reuse it before compute is done
    return dataclasses.replace(frame, image=image)


class Running:
    """The lifecycle both loops share: sources started and sink threads opened on entry; on exit the
    sources closed, and the sinks flushed and closed. A sink's error surfaces at exit when the run
    ended normally (or the caller stopped early); after a failure, the failure is the error reported.
    ``join`` and ``finish`` do the same for one stream while the others run (a server's streams come
    and go)."""

    def __init__(self, streams: Sequence[Stream]) -> None:
        self.streams = list(streams)
        self._threads: dict[int, SinkThread] = {}

    def __enter__(self) -> Running:
        self._threads = {id(s): SinkThread(list(s.sinks)) for s in self.streams if s.sinks}
        for stream in self.streams:
            stream.source.start()
        return self

    def join(self, stream: Stream) -> None:
        """Start one more stream: its sink thread, then its source. Raises the source's error (its sinks
        are then closed, untouched: outputs appear with the first result)."""
        if stream.sinks:
            self._threads[id(stream)] = SinkThread(list(stream.sinks))
        try:
            stream.source.start()
        except BaseException:
            self.finish(stream)
            raise
        self.streams.append(stream)

    def hand_out(self, stream: Stream, result: FrameResult) -> None:
        """Count ``result`` for its stream and queue it for the stream's sinks."""
        stream.frames += 1
        stream.latency.add(result.times, result.age_ms)
        thread = self._threads.get(id(stream))
        if thread is not None:
            thread.put(result)

    def finish(self, stream: Stream) -> Exception | None:
        """Stop one stream: close its source, flush and close its sinks; returns the first sink error."""
        if stream in self.streams:
            self.streams.remove(stream)
        stream.source.close()
        thread = self._threads.pop(id(stream), None)
        try:
            if thread is not None:
                thread.close()
        except Exception as error:  # reported to the caller, who decides whether it ends the run
            return error
        return None

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None and not issubclass(exc_type, GeneratorExit)
        for stream in self.streams:
            stream.source.close()
        first_error: Exception | None = None
        for stream in list(self.streams):  # every thread is closed before any error is reported
            first_error = first_error or self.finish(stream)
        if first_error is not None and not failed:
            raise first_error  # after a failure, the failure already propagating is the one to report
