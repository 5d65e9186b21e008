"""From the picture a stream stores to the picture a player shows: the display matrix (rotation and
mirroring, as phones record portrait video) and the sample aspect ratio (non-square pixels).

The display matrix is FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX`` (libavutil/display.h): nine int32, the
2x2 part in 16.16 fixed point, mapping a stored pixel position ``(x, y)`` (y down) to its displayed
position ``(x, y) @ [[a, b], [c, d]]``, translation aside. A right-angle matrix is one of eight
orientations: a rotation by 0, 90, 180 or 270 degrees, optionally after a left-right mirror. That is
what FFmpeg's command line turns into ``transpose``/``hflip``/``vflip`` filters (its autorotate), and what
``Orientation`` applies with numpy. A matrix that is not a right angle (a skew, or a rotation such as
30 degrees) cannot be applied without resampling; such frames are delivered as stored and the source
says so.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# Sample aspect ratios outside this range are not a real pixel shape but a damaged or nonsense header
# (anamorphic formats go from 1:2 to 2:1); they are ignored rather than stretching a picture 100x.
SAR_RANGE = (Fraction(1, 4), Fraction(4, 1))


@dataclass(frozen=True, slots=True)
class Orientation:
    """Turn a stored picture into the displayed one: mirror left-right (when ``mirrored``), then
    rotate counterclockwise by ``rotation`` degrees."""

    rotation: int = 0  # 0, 90, 180 or 270, counterclockwise as seen on screen
    mirrored: bool = False

    def __post_init__(self) -> None:
        if self.rotation not in (0, 90, 180, 270):
            raise ValueError(f"Orientation.rotation must be 0, 90, 180 or 270, got {self.rotation}")

    @property
    def identity(self) -> bool:
        return self.rotation == 0 and not self.mirrored

    @property
    def swaps_axes(self) -> bool:
        return self.rotation in (90, 270)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` ([H, W, C]) as displayed, C-contiguous; the same array when nothing changes."""
        if self.identity:
            return image
        out = image[:, ::-1] if self.mirrored else image
        return np.ascontiguousarray(np.rot90(out, k=self.rotation // 90))

    def describe(self) -> str:
        parts = ["mirrored left-right"] if self.mirrored else []
        if self.rotation:
            parts.append(f"rotated {self.rotation} degrees counterclockwise")
        return " and ".join(parts) or "as stored"

    @classmethod
    def from_matrix(cls, matrix: tuple[int, ...]) -> Orientation | None:
        """The orientation of a right-angle display matrix (nine int32 as FFmpeg stores them); None
        when the matrix is not a right angle (see the module docstring). An all-zero matrix, as a
        damaged header writes, is no orientation at all: the identity."""
        a, b, _, c, d = (v / 65536.0 for v in matrix[:5])
        if not any((a, b, c, d)):
            return cls()
        scale = math.hypot(a, b)
        if scale == 0 or abs(math.hypot(c, d) - scale) > 1e-3 * scale:
            return None  # not a rotation (with or without mirror) times a uniform scale
        a, b, c, d = (round(v / scale, 6) for v in (a, b, c, d))
        signs = {abs(v) for v in (a, b, c, d)}
        if signs != {0.0, 1.0} or (a == 0) != (d == 0):
            return None  # an angle that is not a multiple of 90 degrees, or a skew
        mirrored = a * d - b * c < 0
        if mirrored:  # undo the mirror (x -> -x, applied first): it negates the first row
            a, b = -a, -b
        # For a pure rotation the first row is (cos t, -sin t) with t counterclockwise on screen (y down).
        rotation = round(math.degrees(math.atan2(-b, a))) % 360
        return cls(rotation=rotation, mirrored=mirrored)

    @classmethod
    def of_frame(cls, frame) -> Orientation | None:  # frame: av.VideoFrame
        """The orientation of a decoded PyAV frame; identity where it carries no display matrix."""
        from av.sidedata.sidedata import Type

        data = frame.side_data.get(Type.DISPLAYMATRIX)
        raw = bytes(data) if data is not None else b""
        if len(raw) != 36:  # none, or a damaged one that is not nine int32: shown as stored
            return cls()
        return cls.from_matrix(struct.unpack("=9i", raw))


def display_width(width: int, sar: Fraction | None) -> int:
    """The width a player shows a ``width``-pixel-wide picture at, for sample aspect ratio ``sar``
    (height unchanged, as FFmpeg's ``scale=iw*sar:ih``); ``width`` when ``sar`` is unknown or 1."""
    if sar is None or sar == 1:
        return width
    return max(1, round(width * sar))


def usable_sar(sar: Fraction | None) -> Fraction | None:
    """``sar`` when it describes a real pixel shape, None when it is unknown (0/1) or nonsense."""
    if sar is None or sar <= 0:
        return None
    return sar if SAR_RANGE[0] <= sar <= SAR_RANGE[1] else None
