"""Re-identification after long occlusion: a bounded gallery of retired tracks.

SAM 2 finds a lost object again only while the tracker keeps its memory; the fuser retires a track
that has been lost for ``retire_after`` frames, and an object that comes back later is spawned as a new
track with a new id. This gallery keeps what identified each retired track, and gives a track that is
about to spawn its old id back when they match.

What identifies a track (``Signature``), pooled over its last good frames (``SignatureAccumulator``):
- an appearance embedding: the masked average of the image encoder's top-level features under the
  object's mask (``engine.track.appearance.pool_appearance``), L2-normalised;
- SAM 2's object pointer for the object (the mask decoder's output token through ``obj_ptr_proj``: what
  the tracker's memory attention itself uses to tell objects apart), L2-normalised;
- the class, the last box it was seen in and the stream time it was last seen.
A good frame is one where the object is visible and mostly unoccluded (the caller decides: the tracker's
object score above zero and enough of its mask visible); a signature averages the unit vectors of the
last ``window`` good frames and normalises the mean.

A candidate matches an entry when all hold (``ReidGallery.match``):
- same class;
- plausible in time: seen after the entry, at most ``max_age_s`` later;
- plausible in place, under a bounded-speed motion model: an unseen object may have moved anywhere
  within ``reach = d * (1 + max_speed * dt)`` of its last box's centre, d its size (box diagonal) when
  last seen well (a box as it leaves the frame is a sliver) and dt the seconds since it was last seen. Speed is in object sizes per second, so the model does not
  depend on the image's resolution, and near (large) objects may move more pixels than far ones. No
  direction is assumed: objects that leave a frame often come back the way they went;
- similar: ``(1 - w) cos(appearance) + w cos(pointer) >= threshold`` (w = ``pointer_weight``; appearance
  alone when either side has no pointer), and better than the candidate's next-best entry by ``margin``
  (two look-alikes in the gallery: rather a new id than the wrong old one).
Several candidates on one frame are matched jointly (optimal assignment on similarity); a matched entry
is consumed, so two live tracks never get one id.

Memory is fixed at construction: ``capacity`` entries in preallocated arrays, whatever the stream's
length; entries older than ``max_age_s`` are dropped, and the oldest goes first when the gallery is full.

In the engine, ``engine.fuse.Fuser(reid=ReidConfig())`` holds a ``TrackReidentifier``: the tracker's
``Tracks.embeddings`` and ``.pointers`` feed each visible track's signature, a track retired as lost
enters the gallery, and a track the fuser spawned is looked up on its first frame with a usable
embedding (the spawn frame itself, since SAM 2 decodes the prompt there); a match goes on under the
retired id (the ``Reidentify`` decision, in the JSONL as ``"decision": "reidentify"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ReidConfig:
    # Combined cosine similarity at or above which a spawn takes a retired id, and the lead the best
    # entry needs over the next. Tuned by benchmarks/reid.py (2026-11-30; 5 seeds x 30 s scenes, 2-5 s
    # absences and never-seen look-alikes entering meanwhile, 44-46 returns and 84-91 lookups per
    # scenario, embedding doubles): at 0.6 every scenario recovers 0.955-1.0 of the returns with no false
    # re-identification; at 0.5 look-alikes take retired ids (false 3.6-8.3 %); at 0.7 returns among
    # look-alikes are lost (recovery 0.48). A margin prevented no false match at 0.6 and cost 2 % of the
    # look-alike recoveries, hence 0 (the check stays for galleries of near-twins).
    threshold: float = 0.6
    margin: float = 0.0
    # Weight of the object-pointer similarity in the combined similarity (0: appearance only). Same
    # benchmark: at 0.6, 0.5 recovers 0.955 of look-alike returns against 0.886 on appearance alone; at
    # lower thresholds pointers (alike within a class) add false matches.
    pointer_weight: float = 0.5
    # Entries kept at most (the oldest is dropped first) and their longest life: a gallery entry costs
    # (appearance + pointer dims) x 4 bytes, 2 KiB for SAM 2's 256 + 256.
    capacity: int = 64
    max_age_s: float = 30.0
    # The motion model's speed bound, in box diagonals per second (see the module docstring). 3 covers
    # people walking across a frame and cars in traffic; after 2 s it already allows 7 diagonals.
    max_speed: float = 3.0

    def __post_init__(self) -> None:
        for name in ("threshold", "margin", "pointer_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"re-identification {name} must be in [0, 1], got {getattr(self, name)}")
        if self.capacity < 1:
            raise ConfigError(f"re-identification capacity must be >= 1 entry, got {self.capacity}")
        if self.max_age_s <= 0 or self.max_speed < 0:
            raise ConfigError(f"re-identification needs max_age_s > 0 and max_speed >= 0, got "
                              f"{self.max_age_s} and {self.max_speed}")


@dataclass(frozen=True, slots=True)
class Signature:
    """What identifies one object at one time. Vectors are unit length (``_unit`` makes them so)."""

    embedding: np.ndarray  # [D] float32 appearance embedding
    pointer: np.ndarray | None  # [P] float32 SAM 2 object pointer; None where the tracker gives none
    class_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels, where it was last seen
    time: float  # stream seconds when it was last seen
    size: float | None = None  # pixels: its box diagonal on its last good frame; None: that of ``box``

    def __post_init__(self) -> None:
        object.__setattr__(self, "embedding", _unit(self.embedding, "embedding"))
        if self.pointer is not None:
            object.__setattr__(self, "pointer", _unit(self.pointer, "pointer"))
        x1, y1, x2, y2 = self.box
        if not (x2 >= x1 and y2 >= y1) or not np.isfinite(self.time):
            raise ValueError(f"Signature: box {self.box} must have x2 >= x1, y2 >= y1 and time must be finite")
        if self.size is None:
            object.__setattr__(self, "size", float(np.hypot(x2 - x1, y2 - y1)))


class SignatureAccumulator:
    """A live track's signature, pooled over its last ``window`` good frames.

    ``observe`` every frame the track is visible; ``good`` frames also add their vectors. Holds at most
    ``window`` vectors of each kind.
    """

    def __init__(self, *, window: int = 8, min_good: int = 1) -> None:
        if window < 1 or not 1 <= min_good <= window:
            raise ConfigError(f"signature window={window}, min_good={min_good}: need 1 <= min_good <= window")
        self.window, self.min_good = window, min_good
        self._embeddings: list[np.ndarray] = []
        self._pointers: list[np.ndarray] = []
        self.class_id: int | None = None
        self.box: tuple[float, float, float, float] | None = None
        self.time: float | None = None
        self.size: float | None = None  # box diagonal on the last good frame

    def observe(self, *, class_id: int, box: Sequence[float], time: float, good: bool,
                embedding: np.ndarray | None = None, pointer: np.ndarray | None = None) -> None:
        self.class_id, self.box, self.time = int(class_id), tuple(float(v) for v in box), float(time)
        if good:
            self.size = float(np.hypot(self.box[2] - self.box[0], self.box[3] - self.box[1]))
        if good and embedding is not None:
            self._embeddings = [*self._embeddings[-(self.window - 1):], _unit(embedding, "embedding")]
            if pointer is not None:
                self._pointers = [*self._pointers[-(self.window - 1):], _unit(pointer, "pointer")]

    def signature(self) -> Signature | None:
        """The pooled signature, or None before ``min_good`` good frames."""
        if len(self._embeddings) < self.min_good or self.box is None:
            return None
        pointer = np.mean(self._pointers, axis=0) if self._pointers else None
        return Signature(embedding=np.mean(self._embeddings, axis=0), pointer=pointer, class_id=self.class_id,
                         box=self.box, time=self.time, size=self.size)


class ReidGallery:
    """Retired tracks' signatures, in fixed memory; see the module docstring for the matching rule.

    Args:
        config: thresholds and bounds (``ReidConfig``).
        embedding_dim, pointer_dim: vector sizes (SAM 2: 256 and 256; pointer_dim 0 without pointers).
    """

    def __init__(self, config: ReidConfig = ReidConfig(), *, embedding_dim: int = 256, pointer_dim: int = 256) -> None:
        self.config = config
        n = config.capacity
        self._embedding = np.zeros((n, embedding_dim), dtype=np.float32)
        self._pointer = np.zeros((n, pointer_dim), dtype=np.float32)
        self._has_pointer = np.zeros(n, dtype=bool)
        self._box = np.zeros((n, 4), dtype=np.float64)
        self._size = np.zeros(n, dtype=np.float64)
        self._time = np.zeros(n, dtype=np.float64)
        self._class = np.zeros(n, dtype=np.int64)
        self._id = np.full(n, -1, dtype=np.int64)  # -1: free slot

    def __len__(self) -> int:
        return int((self._id >= 0).sum())

    @property
    def ids(self) -> list[int]:
        """Track ids held, oldest first."""
        used = np.nonzero(self._id >= 0)[0]
        return [int(self._id[i]) for i in used[np.argsort(self._time[used], kind="stable")]]

    def memory_bytes(self) -> int:
        """Bytes held, whatever has been added: the arrays are allocated once."""
        arrays = (self._embedding, self._pointer, self._has_pointer, self._box, self._size, self._time, self._class,
                  self._id)
        return int(sum(a.nbytes for a in arrays))

    def retire(self, track_id: int, signature: Signature) -> None:
        """Keep ``signature`` for ``track_id`` (replacing an entry for that id); full: drop the oldest."""
        if signature.embedding.shape != self._embedding.shape[1:]:
            raise ValueError(f"embedding of {signature.embedding.shape[0]} values; this gallery holds "
                             f"{self._embedding.shape[1]}")
        self.expire(signature.time)
        same = np.nonzero(self._id == track_id)[0]
        free = np.nonzero(self._id < 0)[0]
        slot = same[0] if len(same) else free[0] if len(free) else int(np.argmin(self._time))
        self._embedding[slot] = signature.embedding
        has_pointer = signature.pointer is not None and signature.pointer.shape == self._pointer.shape[1:]
        self._pointer[slot] = signature.pointer if has_pointer else 0.0
        self._has_pointer[slot] = has_pointer
        self._box[slot] = signature.box
        self._size[slot] = signature.size
        self._time[slot] = signature.time
        self._class[slot] = signature.class_id
        self._id[slot] = track_id

    def expire(self, now: float) -> None:
        """Drop entries last seen more than ``max_age_s`` before ``now``."""
        self._id[(self._id >= 0) & (now - self._time > self.config.max_age_s)] = -1

    def similarity(self, candidates: Sequence[Signature]) -> np.ndarray:  # [N candidates, capacity]
        """Combined similarity of each candidate with each slot; -inf where the pair is implausible
        (free slot, other class, not later or too late, too far for the time unseen)."""
        cfg = self.config
        out = np.full((len(candidates), len(self._id)), -np.inf)
        used = self._id >= 0
        centre = (self._box[:, :2] + self._box[:, 2:]) / 2
        for row, c in enumerate(candidates):
            dt = c.time - self._time
            reach = self._size * (1.0 + cfg.max_speed * dt)
            c_centre = np.array([(c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2])
            distance = np.hypot(*(centre - c_centre).T)
            ok = used & (self._class == c.class_id) & (dt > 0) & (dt <= cfg.max_age_s) & (distance <= reach)
            appearance = self._embedding @ c.embedding
            if c.pointer is not None and c.pointer.shape == self._pointer.shape[1:] and cfg.pointer_weight > 0:
                pointer = self._pointer @ c.pointer
                both = self._has_pointer
                combined = np.where(both, (1 - cfg.pointer_weight) * appearance + cfg.pointer_weight * pointer,
                                    appearance)
            else:
                combined = appearance
            out[row, ok] = combined[ok]
        return out

    def match(self, candidates: Sequence[Signature]) -> list[int | None]:
        """For each candidate (tracks about to spawn on one frame), the retired id it takes, or None.
        Matched entries leave the gallery."""
        return [None if m is None else m[0] for m in self.match_scored(candidates)]

    def match_scored(self, candidates: Sequence[Signature]) -> list[tuple[int, float] | None]:
        """``match``, with the combined similarity of each match: (retired id, similarity) or None."""
        if not candidates:
            return []
        self.expire(max(c.time for c in candidates))
        sim = self.similarity(candidates)
        cfg = self.config
        allowed = sim >= cfg.threshold
        if sim.shape[1] > 1:
            # A candidate with two plausible entries within `margin` of each other is ambiguous.
            best, second = (-np.sort(-sim, axis=1)[:, :2]).T
            lead = np.where(np.isfinite(second), best - np.where(np.isfinite(second), second, 0.0), np.inf)
            allowed &= (lead >= cfg.margin)[:, None]
        if not allowed.any():
            return [None] * len(candidates)
        rows, cols = linear_sum_assignment(np.where(allowed, sim, -1.0), maximize=True)
        out: list[tuple[int, float] | None] = [None] * len(candidates)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if allowed[r, c]:
                out[r] = (int(self._id[c]), float(sim[r, c]))
                self._id[c] = -1
        return out


@dataclass(frozen=True, slots=True)
class Sighting:
    """One visible track on one frame, as the fusion policy hands it to ``TrackReidentifier``."""

    obj_id: int
    class_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 frame pixels
    embedding: np.ndarray | None  # [D] appearance embedding; None or all zero: too small to describe
    pointer: np.ndarray | None  # [P] object pointer, or None
    whole: bool  # fully inside the frame (not cut by its edge) and seen by the tracker (score > 0)


class TrackReidentifier:
    """The gallery in a fusion policy's life cycle (``engine.fuse.Fuser`` with ``reid=``):

    - ``observe`` every frame the tracks that are visible; a ``whole`` sighting with an embedding is a
      good frame for its signature (an object cut by the frame's edge shows only part of itself);
    - ``retired`` when the policy retires a track: one lost from sight leaves its signature in the
      gallery; a duplicate or an unconfirmed track (following nothing) does not;
    - ``lookup`` the tracks the policy spawned, on their first frame with a usable embedding: each gets
      a retired id back, or keeps its own.
    Memory: the gallery's fixed arrays plus ``window`` vectors per live track.

    Args:
        config: the gallery's thresholds and bounds.
        window: good frames a live track's signature pools.
    """

    def __init__(self, config: ReidConfig = ReidConfig(), *, window: int = 8) -> None:
        self.config = config
        self.window = window
        self.gallery: ReidGallery | None = None  # made on the first retirement, with that signature's sizes
        self._signatures: dict[int, SignatureAccumulator] = {}
        self._pending: set[int] = set()  # spawned, not looked up yet

    def spawned(self, obj_id: int) -> None:
        self._pending.add(obj_id)

    def observe(self, sightings: Sequence[Sighting], *, time: float) -> None:
        for s in sightings:
            usable = _usable(s.embedding)
            acc = self._signatures.setdefault(s.obj_id, SignatureAccumulator(window=self.window))
            acc.observe(class_id=s.class_id, box=s.box, time=time, good=s.whole and usable,
                        embedding=s.embedding if usable else None,
                        pointer=s.pointer if _usable(s.pointer) else None)

    def retired(self, obj_id: int, *, lost: bool) -> None:
        acc = self._signatures.pop(obj_id, None)
        self._pending.discard(obj_id)
        signature = acc.signature() if acc is not None and lost else None
        if signature is None:
            return
        if self.gallery is None:
            pointer_dim = signature.pointer.shape[0] if signature.pointer is not None else 0
            self.gallery = ReidGallery(self.config, embedding_dim=signature.embedding.shape[0],
                                       pointer_dim=pointer_dim)
        self.gallery.retire(obj_id, signature)

    def lookup(self, sightings: Sequence[Sighting], *, time: float) -> list[tuple[int, int, float]]:
        """(spawned id, retired id, similarity) for each pending track in ``sightings`` that matched; every
        pending track with a usable embedding is looked up once."""
        ready = [s for s in sightings if s.obj_id in self._pending and _usable(s.embedding)]
        if not ready:
            return []
        self._pending -= {s.obj_id for s in ready}
        if self.gallery is None or not len(self.gallery):
            return []
        candidates = [Signature(embedding=s.embedding, pointer=s.pointer if _usable(s.pointer) else None,
                                class_id=s.class_id, box=s.box, time=time) for s in ready]
        matches = self.gallery.match_scored(candidates)
        return [(s.obj_id, m[0], m[1]) for s, m in zip(ready, matches) if m is not None]

    def renamed(self, spawned_id: int, obj_id: int) -> None:
        """The spawned track goes on as ``obj_id``: its signature so far does too."""
        acc = self._signatures.pop(spawned_id, None)
        if acc is not None:
            self._signatures[obj_id] = acc


def _usable(vector: np.ndarray | None) -> bool:
    return vector is not None and bool(np.any(vector)) and bool(np.all(np.isfinite(vector)))


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(f"Signature: {what} must be a finite, non-zero vector")
    return v / norm
