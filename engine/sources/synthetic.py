"""Synthetic scenes with exact ground truth: moving, occluding shapes on a textured background.

Every object is a solid-coloured shape (disc, box, triangle or blob: the classes) with a stable id. Its
centre and rotation are closed-form functions of time, so any frame can be rendered on its own, in any
order, and a seed gives the same scene on every machine. Half the objects swing wide enough to leave
the frame and come back; the others wander over the middle and cross each other.

With ``stuff=True`` the background is a street instead: sky, building blocks with windows, vegetation,
a sidewalk and a road, each a region with an exact per-pixel "stuff" label (``STUFF_NAMES``), laid out
from the seed and static (a fixed camera); the moving objects are the "things" over it. The objects and
their motion are the same as without stuff, and scenes without stuff are unchanged.

Exactness: each frame is rasterised once into an id map, painting the shapes far to near with no
anti-aliasing (a pixel belongs to a shape when its centre is inside). The picture and the ground truth
are both read off that one id map, so they agree pixel for pixel. Object colours are fully saturated
(one channel 255) and the background stays within [48, 200] in every channel, so an object pixel never
has the background's value at that place.
"""

from __future__ import annotations

import colorsys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.errors import ConfigError, SourceError
from engine.sources.base import Picture, Source, SourceInfo

CLASS_NAMES = ("disc", "box", "triangle", "blob")
STUFF_NAMES = ("road", "sidewalk", "building", "vegetation", "sky")  # the stuff=True background's classes
_BACKGROUND_RANGE = (48, 200)  # inclusive; object colours keep a channel at 255 (see module docstring)
_BLOB_LOBES = (0.25, 0.12)  # relative radius swing of the blob's 3- and 5-lobed outline
_MAX_SIDE = 8192  # pixels: an 8K frame; larger is a typo that would allocate gigabytes per frame


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The visible instances of one frame, ids ascending; ``masks`` hold only the pixels not hidden by
    a nearer object, so they are disjoint and their union is ``id_map >= 0``."""

    ids: np.ndarray  # [K] int64 object ids
    class_ids: np.ndarray  # [K] int64 indices into SyntheticScene.class_names
    masks: np.ndarray  # [K, H, W] bool
    id_map: np.ndarray  # [H, W] int32 object id per pixel, -1 for background
    # [H, W] int32 index into STUFF_NAMES of the visible background, -1 under objects; None without stuff
    stuff_map: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class SceneObject:
    """One object and its motion. Centre at time t (seconds):
    ``(cx + ax sin(wx t + px), cy + ay sin(wy t + py))``; rotation ``angle0 + spin t`` radians."""

    id: int
    class_id: int
    colour: tuple[int, int, int]  # RGB, one channel 255
    depth: int  # painting order: a larger depth is nearer and hides what it overlaps
    radius: float  # pixels: circumradius of the shape (the blob's mean radius)
    aspect: float  # box height / width, in (0, 1]
    cx: float
    cy: float
    ax: float
    ay: float
    wx: float
    wy: float
    px: float
    py: float
    angle0: float
    spin: float

    def centre(self, t: float) -> tuple[float, float]:
        return (self.cx + self.ax * np.sin(self.wx * t + self.px),
                self.cy + self.ay * np.sin(self.wy * t + self.py))

    def extent(self) -> float:
        """Radius of a circle that always contains the shape, whatever its rotation."""
        name = CLASS_NAMES[self.class_id]
        if name == "box":  # corners at (r, r * aspect)
            return self.radius * float(np.hypot(1.0, self.aspect))
        if name == "blob":
            return self.radius * (1.0 + sum(_BLOB_LOBES))
        return self.radius


class SyntheticScene:
    """A deterministic clip of ``frames`` pictures of ``width`` x ``height`` at ``fps``.

    ``render(i)`` gives frame i as [H, W, 3] uint8 RGB; ``ground_truth(i)`` its visible instances;
    ``shape_mask(id, i)`` one object's whole shape (occluded parts included) clipped to the frame.
    With ``stuff=True`` the background is labelled street scenery (``stuff_names``, ``stuff_map``).
    """

    class_names = CLASS_NAMES
    stuff_names = STUFF_NAMES

    def __init__(self, *, seed: int = 0, frames: int = 300, width: int = 640, height: int = 480,
                 objects: int = 6, fps: float = 30.0, stuff: bool = False) -> None:
        if (frames < 1 or not 16 <= width <= _MAX_SIDE or not 16 <= height <= _MAX_SIDE
                or not 0 <= objects <= 200 or not 0 < fps <= 1000 or seed < 0):
            raise ConfigError(
                f"synthetic scene needs frames >= 1, a size from 16x16 to {_MAX_SIDE}x{_MAX_SIDE}, "
                f"0..200 objects, 0 < fps <= 1000 and seed >= 0; got frames={frames}, "
                f"size={width}x{height}, objects={objects}, fps={fps}, seed={seed}"
            )
        self.seed, self.frames, self.width, self.height, self.fps = seed, frames, width, height, fps
        rng = np.random.default_rng(seed)
        depths = rng.permutation(objects)
        self.objects = tuple(self._make_object(k, objects, int(depths[k]), rng) for k in range(objects))
        self._palette = np.array([o.colour for o in self.objects] or [(0, 0, 0)], dtype=np.uint8)
        self._painting_order = sorted(self.objects, key=lambda o: o.depth)
        self._background = self._make_background(rng)
        self.stuff = bool(stuff)
        self._stuff_map: np.ndarray | None = None  # [H, W] int32 index into STUFF_NAMES
        if self.stuff:  # its own generator: the objects and the plain background stay those of stuff=False
            self._background, self._stuff_map = _paint_street(self.width, self.height, seed=seed)
        self._last: tuple[int, np.ndarray] | None = None  # the last id map, for render + ground_truth

    @classmethod
    def from_spec(cls, spec: str) -> SyntheticScene:
        """A scene from ``seed=3,frames=300,size=640x480,objects=6,fps=30,stuff=1`` (every key optional)."""
        kwargs: dict[str, float | int] = {}
        keys = ("seed", "frames", "size", "objects", "fps", "stuff")
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, value = item.partition("=")
            try:
                if not sep or key not in keys:
                    raise ValueError
                if key == "size":
                    w, h = value.lower().split("x")
                    kwargs["width"], kwargs["height"] = int(w), int(h)
                elif key == "stuff":
                    if value not in ("0", "1"):
                        raise ValueError
                    kwargs["stuff"] = value == "1"
                else:
                    kwargs[key] = float(value) if key == "fps" else int(value)
            except ValueError:
                raise SourceError(
                    f"synthetic:{spec}: bad item '{item}'; use key=value with keys {', '.join(keys)} "
                    f"(size as WxH, stuff as 0 or 1), e.g. synthetic:seed=3,frames=300,size=640x480,objects=6"
                ) from None
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise SourceError(f"synthetic:{spec}: {exc}") from None

    @property
    def background(self) -> np.ndarray:  # [H, W, 3] uint8 RGB
        """The static textured background every frame is painted on (a copy)."""
        return self._background.copy()

    def render(self, i: int) -> np.ndarray:  # [H, W, 3] uint8 RGB
        id_map = self._id_map(i)
        image = self._background.copy()
        fg = id_map >= 0
        image[fg] = self._palette[id_map[fg]]
        return image

    def ground_truth(self, i: int) -> GroundTruth:
        id_map = self._id_map(i)
        ids = np.unique(id_map[id_map >= 0]).astype(np.int64)
        class_ids = np.array([self.objects[k].class_id for k in ids], dtype=np.int64)
        masks = id_map[None, :, :] == ids[:, None, None]
        stuff_map = None
        if self._stuff_map is not None:
            stuff_map = np.where(id_map >= 0, -1, self._stuff_map).astype(np.int32)
        return GroundTruth(ids=ids, class_ids=class_ids, masks=masks, id_map=id_map.copy(), stuff_map=stuff_map)

    def shape_mask(self, object_id: int, i: int) -> np.ndarray:  # [H, W] bool
        """Object ``object_id``'s whole shape at frame i, hidden parts included, clipped to the frame."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        window = self._rasterise(self.objects[object_id], self._time(i))
        if window is not None:
            y0, x0, inside = window
            mask[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]] = inside
        return mask

    def _time(self, i: int) -> float:
        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} is outside this scene's 0..{self.frames - 1}")
        return i / self.fps

    def _id_map(self, i: int) -> np.ndarray:  # [H, W] int32
        last = self._last
        if last is not None and last[0] == i:
            return last[1]
        t = self._time(i)
        id_map = np.full((self.height, self.width), -1, dtype=np.int32)
        for obj in self._painting_order:  # far to near: a nearer shape overwrites what it hides
            window = self._rasterise(obj, t)
            if window is not None:
                y0, x0, inside = window
                id_map[y0:y0 + inside.shape[0], x0:x0 + inside.shape[1]][inside] = obj.id
        id_map.flags.writeable = False
        self._last = (i, id_map)
        return id_map

    def _rasterise(self, obj: SceneObject, t: float) -> tuple[int, int, np.ndarray] | None:
        """The shape's pixels inside the frame as (top row, left column, [h, w] bool window), or None
        when no pixel centre of the frame lies inside it."""
        cx, cy = obj.centre(t)
        reach = obj.extent()
        x0, x1 = max(0, int(np.floor(cx - reach))), min(self.width, int(np.ceil(cx + reach)) + 1)
        y0, y1 = max(0, int(np.floor(cy - reach))), min(self.height, int(np.ceil(cy + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        # Pixel centres relative to the shape's centre, in float64 so the test is the same everywhere.
        dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :]
        dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None]
        angle = obj.angle0 + obj.spin * t
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos  # coordinates in the shape's own frame
        name = CLASS_NAMES[obj.class_id]
        r = obj.radius
        if name == "disc":
            inside = u * u + v * v <= r * r
        elif name == "box":
            inside = (np.abs(u) <= r) & (np.abs(v) <= r * obj.aspect)
        elif name == "triangle":
            # Equilateral with circumradius r: inside all three edges, each at distance r/2 from the
            # centre with its outward normal pointing away from the opposite vertex.
            inside = np.ones(u.shape, dtype=bool)
            for k in range(3):
                a = np.pi + 2.0 * np.pi * k / 3.0
                inside &= u * np.cos(a) + v * np.sin(a) <= r / 2.0
        else:  # blob: a star-shaped outline whose radius swings with the polar angle
            theta = np.arctan2(v, u)
            outline = r * (1.0 + _BLOB_LOBES[0] * np.sin(3.0 * theta) + _BLOB_LOBES[1] * np.sin(5.0 * theta))
            inside = u * u + v * v <= outline * outline
        inside = np.broadcast_to(inside, (y1 - y0, x1 - x0))
        if not inside.any():
            return None
        return y0, x0, inside

    def _make_object(self, k: int, n: int, depth: int, rng: np.random.Generator) -> SceneObject:
        w, h = self.width, self.height
        short = min(w, h)
        radius = float(rng.uniform(0.06, 0.12) * short)
        class_id = k % len(CLASS_NAMES)  # every class present once there are four objects
        reach = radius * 1.42  # bounds extent() for every class: box corners reach sqrt(2) r at most
        if k % 2 == 0:
            # Swings past the left and right edges (by 5-30 % of the half width plus its own size):
            # leaves the frame and re-enters every half period.
            ax = float((w / 2 + reach) * rng.uniform(1.05, 1.3))
            ay = float(rng.uniform(0.0, 0.5) * max(h / 2 - reach, 0.0))
        else:  # stays in view, wandering over the middle where it crosses the others
            ax = float(rng.uniform(0.3, 0.9) * max(w / 2 - reach, 0.0))
            ay = float(rng.uniform(0.3, 0.9) * max(h / 2 - reach, 0.0))
        periods = rng.uniform(3.0, 7.0, size=2)  # seconds: each wide swing leaves and returns in a clip
        hue = (k / max(n, 1) + rng.uniform(0.0, 0.5 / max(n, 1))) % 1.0
        colour = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 1.0, 1.0))
        return SceneObject(
            id=k, class_id=class_id, colour=colour, depth=depth,
            radius=radius, aspect=float(rng.uniform(0.5, 1.0)), cx=w / 2, cy=h / 2, ax=ax, ay=ay,
            wx=float(2 * np.pi / periods[0]), wy=float(2 * np.pi / periods[1]),
            px=float(rng.uniform(0, 2 * np.pi)), py=float(rng.uniform(0, 2 * np.pi)),
            angle0=float(rng.uniform(0, 2 * np.pi)), spin=float(rng.uniform(-1.5, 1.5)),
        )

    def _make_background(self, rng: np.random.Generator) -> np.ndarray:  # [H, W, 3] uint8
        """Smooth colour waves plus a fine checker: texture for trackers, far from object colours."""
        ys, xs = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        channels = []
        for _ in range(3):
            fx, fy = rng.uniform(0.5, 3.0, size=2) * 2 * np.pi / np.array([self.width, self.height])
            phase = rng.uniform(0, 2 * np.pi)
            channels.append(np.sin(xs * fx + phase) * np.cos(ys * fy - phase))
        waves = np.stack(channels, axis=-1)  # [H, W, 3] in [-1, 1]
        checker = ((xs // 8 + ys // 8) % 2)[..., None] * 2.0 - 1.0
        lo, hi = _BACKGROUND_RANGE
        mid, span = (lo + hi) / 2.0, (hi - lo) / 2.0
        image = mid + span * (0.75 * waves + 0.25 * checker)
        return np.clip(np.rint(image), lo, hi).astype(np.uint8)


_STUFF_SEED = 0x57FF  # mixed into the seed: the street's generator is independent of the objects'
_ROAD, _SIDEWALK, _BUILDING, _VEGETATION, _SKY = range(len(STUFF_NAMES))


def _paint_street(width: int, height: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A static street picture [H, W, 3] uint8 and its stuff labels [H, W] int32 (index into STUFF_NAMES).

    Bands from the top: sky (a smooth gradient), building blocks of random widths and heights standing on
    the horizon (a window grid for texture) with vegetation (speckled green) between some of them, a
    sidewalk, and a road with dashed lane marks (still road). Every colour stays within the background
    range, so objects remain distinguishable by colour.
    """
    rng = np.random.default_rng([seed, _STUFF_SEED])
    ys, xs = np.mgrid[0:height, 0:width]
    horizon, kerb = int(0.6 * height), int(0.68 * height)
    labels = np.full((height, width), _SKY, dtype=np.int32)
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = np.array([90.0, 140.0, 195.0]) - 40.0 * (ys[..., None] / height)  # sky, darker low down
    x = 0
    while x < width:
        w = int(rng.uniform(0.08, 0.25) * width) + 1
        top = int(rng.uniform(0.12, 0.45) * height)
        block = (slice(top, horizon), slice(x, min(x + w, width)))
        if rng.random() < 0.3:  # a tree line instead of a building
            labels[block] = _VEGETATION
            image[block] = np.array([70.0, 130.0, 60.0]) + rng.normal(0.0, 14.0, (horizon - top, block[1].stop - x, 1))
        else:
            labels[block] = _BUILDING
            shade = rng.uniform(100.0, 170.0)
            image[block] = shade
            window = ((ys[block] - top) % 12 < 6) & ((xs[block] - x) % 10 < 5)
            image[block][window] = (shade * 0.55, shade * 0.6, shade * 0.7)
        x += w
    labels[horizon:kerb] = _SIDEWALK
    image[horizon:kerb] = (175.0, 165.0, 150.0)
    labels[kerb:] = _ROAD
    image[kerb:] = 85.0 + rng.normal(0.0, 6.0, (height - kerb, width, 1))
    lane = (np.abs(ys - (kerb + height) / 2) < max(1, height // 120)) & ((xs // 24) % 2 == 0)
    image[lane & (ys >= kerb)] = 195.0
    lo, hi = _BACKGROUND_RANGE
    return np.clip(np.rint(image), lo, hi).astype(np.uint8), labels


class SyntheticSource(Source):
    """A ``SyntheticScene`` as a source: frame index i is scene frame i, pts is i / fps.

    Not live by default, so every frame arrives; ``live=True, realtime=True`` makes it behave like a
    camera that drops frames a slow consumer misses.
    """

    def __init__(self, scene: SyntheticScene, *, live: bool = False, buffer_size: int = 2,
                 realtime: bool = False, uri: str | None = None) -> None:
        uri = uri or (f"synthetic:seed={scene.seed},frames={scene.frames},"
                      f"size={scene.width}x{scene.height},objects={len(scene.objects)},fps={scene.fps:g}"
                      + (",stuff=1" if scene.stuff else ""))
        super().__init__(uri, live=live, buffer_size=buffer_size, realtime=realtime)
        self.scene = scene

    def _open(self) -> SourceInfo:
        s = self.scene
        return SourceInfo(uri=self.uri, live=self.live, width=s.width, height=s.height, fps=s.fps,
                          frame_count=s.frames, codec="synthetic", start_pts=0.0)

    def _pictures(self) -> Iterator[Picture]:
        for i in range(self.scene.frames):
            started = time.perf_counter()
            image = self.scene.render(i)
            yield Picture(image=image, pts=i / self.scene.fps,
                          decode_ms=(time.perf_counter() - started) * 1000.0)
            if self.stopping:
                return


def to_video(scene: SyntheticScene, path: str | Path, *, frames: int | None = None, crf: int = 18,
             keyframe_interval: int | None = None) -> Path:
    """Encode the scene's first ``frames`` frames (all by default) to H.264 through PyAV; the
    container follows the suffix (.mp4, .mkv, .ts). Lossy: decoded pixels differ slightly from
    ``render`` while the ground truth still locates every object.

    Keyframes come every ``keyframe_interval`` frames (one second by default) with no B-frames, as a
    camera sends them, so a client joining a stream mid-way starts decoding within a second.
    """
    import av

    path = Path(path)
    count = scene.frames if frames is None else frames
    if not 1 <= count <= scene.frames:
        raise ConfigError(f"to_video: frames must be in 1..{scene.frames}, got {frames}")
    if scene.width % 2 or scene.height % 2:
        raise ConfigError(f"to_video: H.264 (yuv420p) needs an even size, got {scene.width}x{scene.height}")
    rate = Fraction(scene.fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.codec_context.gop_size = keyframe_interval or max(1, round(scene.fps))
        stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency", "bf": "0"}
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(scene.render(i), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
