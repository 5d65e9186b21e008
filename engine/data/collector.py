"""The uncertainty collector: scores every frame, keeps the most uncertain ones, writes them for labelling.

A collection folder, written incrementally::

    collection.jsonl          one line per kept frame: file, split, frame, uncertainty and its cues,
                              the engine's instances (track id, class, label, score, box, RLE, outlines)
    images/{train,val}/       the kept frames, lossless PNG (labels' edges stay exact) or JPEG
    labels/{train,val}/       YOLO-seg labels, one .txt per image  } Ultralytics' dataset layout,
    data.yaml                 train/val folders and class names     } for `streamseg finetune yolo`
    annotations.json          COCO instance segmentation (RLE), every split, file names relative to
                              the folder: for `streamseg finetune sam2`, and any COCO tool
    label_studio/tasks.json   Label Studio import: the images with the instances as pre-annotations
    label_studio/config.xml   the labelling config those tasks match (Image + PolygonLabels)

Every ``val_every``-th kept frame goes to the ``val`` split. Until ``images/val`` holds an image,
``data.yaml`` validates on the training images (Ultralytics needs a ``val`` entry that exists).

Label Studio reads images by URL. The default URL prefix, ``/data/local-files/?d=FOLDER/``, serves them
through Label Studio's local-files storage with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` set to the
collection's parent folder (``label_studio_root`` sets another prefix, e.g. a web server's URL).

Crash safety: an image and its label file are written to a temporary name and renamed; the journal line
is one write (a failed write is cut back to the last whole line); the JSON and YAML files are rebuilt from
the journal, streaming it (so memory does not grow with the collection), to a temporary file that
replaces the old one. A killed run leaves every file valid; at most the last frame's image and label
are in the YOLO layout but not yet in the JSON files, and the candidates of the window in progress are
lost. Opening an existing collection continues it (its kept frames count against the budget).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.data.exports import (
    InstanceRecord,
    coco_annotation,
    coco_categories,
    coco_image,
    instance_records,
    label_studio_config,
    label_studio_task,
    yolo_label_lines,
)
from engine.data.selector import FrameSelector, Kept, SelectorConfig
from engine.data.uncertainty import FrameEvidence, UncertaintyScore, UncertaintyWeights, uncertainty
from engine.errors import ConfigError, SinkError
from engine.sinks.base import check_folder
from engine.types import FrameResult

JOURNAL = "collection.jsonl"
COCO_FILE = "annotations.json"
DATA_YAML = "data.yaml"
TASKS_FILE = "label_studio/tasks.json"
CONFIG_FILE = "label_studio/config.xml"
IMAGE_FORMATS = ("png", "jpg")
RANKS = ("uncertainty", "random")  # what orders the frames of a window (CollectorConfig.rank)


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    weights: UncertaintyWeights = field(default_factory=UncertaintyWeights)
    val_every: int = 5  # every 5th kept frame is held out for validation; 0: none
    image_format: str = "png"
    prefix: str = ""  # file-name prefix, so several streams or runs can share one collection
    label_studio_root: str | None = None  # image URL prefix in tasks.json (None: see the module docstring)
    model_version: str = "streamseg"  # Label Studio's name for the model that made the pre-annotations
    # "uncertainty" keeps each window's most uncertain frames; "random" is the baseline that measures what
    # the score buys: the same windows, spacing and budget, frames ranked by a seeded random draw instead
    # (every frame is still scored, and the journal records its uncertainty)
    rank: str = "uncertainty"
    seed: int = 0  # the random ranking's seed

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise ConfigError(f"collector rank must be one of {RANKS}, got {self.rank!r}")
        if self.val_every < 0:
            raise ConfigError(f"collector val_every must be >= 0, got {self.val_every}")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"collector image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if any(c in self.prefix for c in "/\\\0"):
            raise ConfigError(f"collector prefix {self.prefix!r} must be a plain file-name prefix")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A candidate frame's data, on the host: what the exports need, nothing more."""

    image: np.ndarray  # [H, W, 3] uint8 RGB
    index: int
    stream: int
    pts: float | None
    instances: tuple[InstanceRecord, ...]
    score: UncertaintyScore


class Collector:
    """Scores frames by uncertainty and writes the kept ones to ``folder`` (see the module docstring).

    A pipeline sink (``wants_evidence``: the pipeline fills ``FrameResult.evidence`` for it): ``write``
    scores each result from its evidence. The folder is checked when the collector is made, and a new
    collection's files appear with the first frame written, so a run that never delivers a frame writes
    nothing; an existing collection is repaired and continued at once.

    Args:
        folder: a new or empty folder, or an existing collection to continue.
        names: the detector's class names (class id -> label); ids past the end take their labels.
    Raises:
        SinkError: the folder cannot be created or written, or holds something other than a collection.
    """

    wants_overlay = False
    wants_evidence = True

    def __init__(self, folder: str | os.PathLike, *, names: Sequence[str] = (),
                 config: CollectorConfig = CollectorConfig()) -> None:
        self.folder = Path(folder)
        self.config = config
        self.names: list[str] = []
        self.name_classes(names)
        self._stems: set[str] = set()  # file stems already in the collection: a rerun must not overwrite
        self._opened = False
        self._draws = np.random.default_rng(config.seed)  # the random ranking's draws
        kept = self._check()
        self.selector: FrameSelector[_Snapshot] = FrameSelector(config.selector, already_kept=kept)
        self.scored = 0  # frames scored

    @property
    def kept(self) -> int:
        """Frames in the collection (including those of the run it continues)."""
        return self.selector.kept

    def name_classes(self, names: Sequence[str]) -> None:
        """Class id -> label for the classes not named yet (a collection continued keeps its names)."""
        for class_id, label in enumerate(names):
            self._name(class_id, str(label))

    def write(self, result: FrameResult, evidence: FrameEvidence | None = None) -> UncertaintyScore:
        """Score ``result``'s frame from ``evidence`` (default: ``result.evidence``); keep it if it ranks;
        write the frames of any window this frame closed. Returns the frame's score.

        Raises ValueError when there is no evidence, or it is another frame's."""
        evidence = evidence if evidence is not None else result.evidence
        if evidence is None:
            raise ValueError(f"frame {result.frame.index} carries no evidence: give the collector to the pipeline "
                             "as a sink (it asks for evidence), or pass evidence=")
        if evidence.frame != result.frame.index:
            raise ValueError(f"evidence of frame {evidence.frame} given with frame {result.frame.index}")
        if not self._opened:
            self._open()
        score = uncertainty(evidence, self.config.weights)
        self.scored += 1
        rank = score.total if self.config.rank == "uncertainty" else 1.0 - float(self._draws.random())  # (0, 1]
        released = self.selector.offer(result.frame.index, rank, lambda: _snapshot(result, score))
        self._store(released)
        return score

    def close(self) -> None:
        """Write the last window's frames and the final JSON files (nothing if no frame came)."""
        if self._opened:
            self._store(self.selector.finish(), always=True)

    # -- writing ------------------------------------------------------------------------------------

    def _check(self) -> int:
        """Check the folder without writing to a new one; repair and count an existing collection."""
        folder = self.folder
        check_folder(folder, option="--collect folder", what="collection folder")
        if not folder.exists():
            return 0
        journal = folder / JOURNAL
        if not journal.exists():
            if any(folder.iterdir()):
                raise SinkError(f"{folder} is not empty and holds no {JOURNAL}: it is not a streamseg collection; "
                                "choose a new or empty --collect folder")
            return 0
        for leftover in folder.rglob("*.tmp"):  # a killed run's unfinished rewrite
            leftover.unlink()
        _drop_partial_line(journal)
        kept = 0
        for record in _read_journal(journal):
            kept += 1
            self._stems.add(Path(record["file"]).stem)
            for inst in record["instances"]:
                self._name(int(inst["class_id"]), inst["label"])
        self._open()  # rebuilds the views: they trail the journal by a frame after a kill
        return kept

    def _open(self) -> None:
        try:
            for sub in ("images/train", "images/val", "labels/train", "labels/val", "label_studio"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create collection folder {self.folder}: {exc.strerror}; choose a writable "
                            "--collect folder") from None
        self._opened = True
        self._write_views()

    def _store(self, released: list[Kept[_Snapshot]], *, always: bool = False) -> None:
        first = self.selector.kept - len(released)  # the selector counted them when it released them
        for k, kept in enumerate(released):
            self._store_frame(kept.payload, number=first + k)
        if released or always:
            self._write_views()

    def _store_frame(self, snap: _Snapshot, *, number: int) -> None:
        cfg = self.config
        split = "val" if cfg.val_every and number % cfg.val_every == cfg.val_every - 1 else "train"
        stem = f"{cfg.prefix}{'' if snap.stream == 0 else f's{snap.stream}_'}{snap.index:08d}"
        if stem in self._stems:
            raise SinkError(f"{self.folder} already holds frame {stem}; continue into another --collect folder "
                            "or give this run its own file-name prefix")
        self._stems.add(stem)
        height, width = snap.image.shape[:2]
        for inst in snap.instances:
            self._name(inst.class_id, inst.label)
        image_file = f"images/{split}/{stem}.{cfg.image_format}"
        lines = yolo_label_lines(snap.instances, width, height)
        self._atomic_write(_label_file(split, stem), ("\n".join(lines) + "\n" if lines else "").encode())
        ok, encoded = cv2.imencode(f".{cfg.image_format}", np.ascontiguousarray(snap.image[:, :, ::-1]))
        if not ok:
            raise SinkError(f"cannot encode frame {snap.index} as {cfg.image_format}")
        self._atomic_write(image_file, encoded.tobytes())
        record = {"file": image_file, "split": split, "frame": snap.index, "stream": snap.stream,
                  "pts": snap.pts, "width": width, "height": height, "uncertainty": snap.score.as_dict(),
                  "instances": [inst.as_dict() for inst in snap.instances]}
        self._append_journal(json.dumps(record, separators=(",", ":")) + "\n")

    def _write_views(self) -> None:
        """Rebuild annotations.json, tasks.json, data.yaml and config.xml from the journal."""
        journal = self.folder / JOURNAL
        names = self.names
        root = self.config.label_studio_root
        url_prefix = root if root is not None else f"/data/local-files/?d={self.folder.resolve().name}/"
        with self._atomic_stream(COCO_FILE) as f:
            f.write('{"info": {"description": "streamseg collection", "version": "1.0"}, "licenses": [], '
                    f'"categories": {json.dumps(coco_categories(names))}, "images": [')
            for k, rec in enumerate(_read_journal(journal)):
                extra = {"frame": rec["frame"], "stream": rec["stream"], "split": rec["split"],
                         "uncertainty": rec["uncertainty"]["total"]}
                f.write(("," if k else "") + json.dumps(coco_image(k + 1, rec["file"], rec["width"],
                                                                   rec["height"], **extra)))
            f.write('], "annotations": [')
            ann_id = 0
            for k, rec in enumerate(_read_journal(journal)):
                for inst in rec["instances"]:
                    ann_id += 1
                    ann = coco_annotation(ann_id, k + 1, InstanceRecord.from_dict(inst))
                    f.write(("," if ann_id > 1 else "") + json.dumps(ann))
            f.write("]}\n")
        with self._atomic_stream(TASKS_FILE) as f:
            f.write("[")
            for k, rec in enumerate(_read_journal(journal)):
                instances = [InstanceRecord.from_dict(i) for i in rec["instances"]]
                task = label_studio_task(url_prefix + rec["file"], instances, rec["width"], rec["height"],
                                         frame=rec["frame"], model_version=self.config.model_version,
                                         score=rec["uncertainty"]["total"])
                f.write(("," if k else "") + "\n" + json.dumps(task))
            f.write("\n]\n")
        self._atomic_write(CONFIG_FILE, label_studio_config(names).encode())
        self._atomic_write(DATA_YAML, _data_yaml(names, has_val=any((self.folder / "images/val").iterdir())))

    def _name(self, class_id: int, label: str) -> None:
        while len(self.names) <= class_id:
            self.names.append(str(len(self.names)))
        if self.names[class_id] == str(class_id) and label != str(class_id):
            self.names[class_id] = label

    def _append_journal(self, line: str) -> None:
        path = self.folder / JOURNAL
        data = line.encode("utf-8")
        try:
            with open(path, "ab", buffering=0) as f:
                size = f.tell()
                try:
                    view = memoryview(data)
                    while view:
                        view = view[f.write(view):]
                except OSError:
                    f.truncate(size)
                    raise
        except OSError as exc:
            raise SinkError(f"writing {path} failed: {exc.strerror}") from None

    def _atomic_write(self, relative: str, data: bytes) -> None:
        with self._atomic_stream(relative, binary=True) as f:
            f.write(data)

    def _atomic_stream(self, relative: str, *, binary: bool = False):
        return _AtomicFile(self.folder / relative, binary=binary)


def merge_collections(sources: Sequence[str | os.PathLike], into: str | os.PathLike, *, budget: int | None = None,
                      rank: str = "uncertainty", seed: int = 0) -> int:
    """Add the kept frames of collections ``sources`` to the collection ``into`` (new, empty or existing):
    images and YOLO labels copied, journal lines appended, the COCO, Label Studio and YAML files rebuilt.
    What lets several streams or processes collect at once, each into its own folder, and train on one.
    Returns the frames in ``into`` afterwards; the sources are left as they were.

    ``budget`` spends one labelling budget across the sources: only the ``budget`` frames ranked highest
    over all of them are added (in each source's journal order), so cameras that collected apart compete
    for it and a busy camera's hard frames can take the place of a quiet camera's easy ones. ``rank``
    orders them as ``CollectorConfig.rank`` does: by the uncertainty each frame was kept with (ties go to
    the earlier source, then the earlier frame), or by a draw seeded with ``seed`` (the baseline: every
    frame equally likely). The budget counts the frames added, not those ``into`` already holds; each frame
    keeps its source's split, so a budget can leave ``val`` empty. ``budget=None`` adds every frame.

    Everything is checked before anything is written: a failed merge leaves ``into`` as it was. Memory
    holds a few numbers per frame (the journals are read twice, streaming).

    Raises:
        SinkError: a source is not a collection or lacks a file its journal names, two collections hold a
            frame of the same file name (give each run its own ``prefix``), or ``into`` cannot be written.
        ConfigError: ``budget`` below 0 or an unknown ``rank``.
    """
    if (budget is not None and budget < 0) or rank not in RANKS:
        raise ConfigError(f"merging collections needs budget >= 0 and rank in {RANKS}; got budget={budget}, "
                          f"rank={rank!r}")
    into, sources = Path(into), [Path(source) for source in sources]
    frames = [(k, stem, key) for k, source in enumerate(sources) for stem, key in _frame_keys(source)]
    _check_stems(frames, sources, _held_stems(into), into)
    target = Collector(into)  # checks (and repairs) an existing target; a new one is made below
    if budget is not None and budget < len(frames):
        keys = ([key for _, _, key in frames] if rank == "uncertainty"
                else np.random.default_rng(seed).random(len(frames)).tolist())
        frames = [frames[i] for i in sorted(sorted(range(len(frames)), key=lambda i: -keys[i])[:budget])]
    chosen = {(k, stem) for k, stem, _ in frames}
    if not target._opened:
        target._open()
    for k, source in enumerate(sources):
        for record in _read_journal(source / JOURNAL):
            stem = Path(record["file"]).stem
            if (k, stem) not in chosen:
                continue
            for relative in (record["file"], _label_file(record["split"], stem)):
                try:
                    data = (source / relative).read_bytes()
                except OSError as exc:  # checked above: only a file removed during the merge gets here
                    raise SinkError(f"cannot read {source / relative}: {exc.strerror}; the collection is "
                                    "incomplete") from None
                target._atomic_write(relative, data)
            target._stems.add(stem)
            for inst in record["instances"]:
                target._name(int(inst["class_id"]), inst["label"])
            target._append_journal(json.dumps(record, separators=(",", ":")) + "\n")
    target._write_views()
    return len(target._stems)  # one stem per frame: the target's own and the ones merged


def _frame_keys(source: Path) -> Iterator[tuple[str, float]]:
    """(file stem, uncertainty) of each frame of a collection, after checking its image and label exist."""
    journal = source / JOURNAL
    if not journal.is_file():
        raise SinkError(f"{source} holds no {JOURNAL}: it is not a streamseg collection; merge collection folders")
    for record in _read_journal(journal):
        stem = Path(record["file"]).stem
        for relative in (record["file"], _label_file(record["split"], stem)):
            if not (source / relative).is_file():
                raise SinkError(f"{source / relative} is missing: the collection is incomplete; nothing was merged")
        yield stem, float(record.get("uncertainty", {}).get("total", 0.0))  # a hand-made line may have none


def _held_stems(folder: Path) -> set[str]:
    """The file stems a collection holds, read without repairing it (``Collector`` cuts a killed run's
    partial last line off when it opens the folder)."""
    return {Path(record["file"]).stem for record in _read_journal(folder / JOURNAL, whole_lines=True)}


def _check_stems(frames: list[tuple[int, str, float]], sources: list[Path], held: set[str], into: Path) -> None:
    """Every frame of every source must get a file name of its own in ``into``, whichever are chosen."""
    seen: dict[str, int] = {}
    for k, stem, _ in frames:
        if stem in held or stem in seen:
            where = into if stem in held else sources[seen[stem]]
            raise SinkError(f"{where} already holds frame {stem} (also in {sources[k]}); give each run its own "
                            "file-name prefix (--collect-prefix) before merging; nothing was merged")
        seen[stem] = k


class _AtomicFile:
    """A file written to ``NAME.tmp`` and renamed over ``NAME`` only when the ``with`` block succeeds."""

    def __init__(self, path: Path, *, binary: bool) -> None:
        self.path, self.binary = path, binary
        self.tmp = path.with_name(path.name + ".tmp")

    def __enter__(self):
        try:
            self.file = open(self.tmp, "wb" if self.binary else "w", encoding=None if self.binary else "utf-8")
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None
        return self.file

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.file.close()
            if kind is None:
                os.replace(self.tmp, self.path)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def _label_file(split: str, stem: str) -> str:
    """A frame's YOLO-seg label file, relative to the collection (Ultralytics pairs it with the image)."""
    return f"labels/{split}/{stem}.txt"


def _snapshot(result: FrameResult, score: UncertaintyScore) -> _Snapshot:
    frame, inst = result.frame, result.instances
    records = instance_records(inst.masks.cpu().numpy(), inst.ids.tolist(), inst.class_ids.tolist(),
                               inst.labels, inst.scores.tolist(), inst.boxes.tolist())
    return _Snapshot(image=frame.image.cpu().numpy().copy(), index=frame.index, stream=frame.stream,
                     pts=frame.pts, instances=tuple(records), score=score)


def _read_journal(path: Path, *, whole_lines: bool = False) -> Iterator[dict]:
    """The journal's records. ``whole_lines``: stop before a last line without its newline (what a killed
    run leaves) instead of failing on it, for a reader that must not repair the file."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if whole_lines and not line.endswith("\n"):
                return
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise SinkError(f"{path}:{number}: not a collection line; the file was edited or damaged: "
                                    "collect into a new folder") from None


def _drop_partial_line(path: Path) -> None:
    """Cut a journal back to its last whole line (a run killed mid-write can leave a partial one)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def _data_yaml(names: Sequence[str], *, has_val: bool) -> bytes:
    import yaml

    body = yaml.safe_dump({"train": "images/train", "val": "images/val" if has_val else "images/train",
                           "names": dict(enumerate(names))}, sort_keys=False, allow_unicode=True)
    head = ("# streamseg collection in Ultralytics' YOLO-seg layout; paths are relative to this file.\n"
            + ("" if has_val else "# No frame is held out yet: validation reads the training images.\n"))
    return (head + body).encode("utf-8")
