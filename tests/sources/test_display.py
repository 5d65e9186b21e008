"""The source delivers what a player shows, not what the container stores: the stream a player picks,
pictures turned by the display matrix, square pixels, and timestamps that start where the stream does
and keep increasing. Test media are built from the real clips (tests/sources/media.py)."""

from __future__ import annotations

import itertools
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import open_source
from engine.sources.orientation import Orientation
from tests.sources import media


def _frames(path: Path) -> tuple[object, list]:
    src = open_source(path)
    with src:
        return src, list(src)


# --- stream choice -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [media.with_cover_art, media.with_thumbnail_track],
                         ids=["attached-pic-first", "one-frame-track-first"])
def test_cover_art_listed_first_is_not_chosen_over_the_video(tmp_path: Path, make) -> None:
    path = make(tmp_path / "tagged.mp4", frames=60)
    with av.open(str(path)) as container:  # the input is what the issue describes
        first = container.streams.video[0]
        assert (first.codec_context.name, first.codec_context.width) == ("mjpeg", 160)
        count = container.streams.video[1].frames
    src, frames = _frames(path)
    assert (src.info.width, src.info.height, src.info.frame_count) == (1280, 720, count)
    assert len(frames) == count >= 60 and {tuple(f.image.shape) for f in frames} == {(720, 1280, 3)}
    assert any("plays video stream 1" in note for note in src.info.notes)
    np.testing.assert_array_equal(frames[0].image.numpy(), media.dog_frames(1)[0])


def test_only_cover_art_is_no_video(tmp_path: Path) -> None:
    # As FFmpeg exposes the cover of a music file: the only "video" stream is an attached picture.
    path = media.with_cover_art(tmp_path / "cover-only.mp4", frames=60, video=False)
    with pytest.raises(SourceError, match=r"cover-only\.mp4: has no video, only cover art"):
        _ = open_source(path).info


# --- orientation ---------------------------------------------------------------------------------


def _displayed_by_matrix(stored: np.ndarray, matrix: tuple[int, ...]) -> np.ndarray:
    """Reference: libavutil/display.h's definition, pixel by pixel. Each stored pixel centre (x, y),
    y down, goes to (x, y) @ [[a, b], [c, d]]; the picture is what lands in the bounding box."""
    a, b, _, c, d = (v / 65536 for v in matrix[:5])
    h, w = stored.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    x2 = (xs + 0.5) * a + (ys + 0.5) * c
    y2 = (xs + 0.5) * b + (ys + 0.5) * d
    xi, yi = np.rint(x2 - x2.min()).astype(int), np.rint(y2 - y2.min()).astype(int)
    out = np.zeros((yi.max() + 1, xi.max() + 1) + stored.shape[2:], stored.dtype)
    out[yi, xi] = stored[ys, xs]
    return out


IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
# (ccw degrees, hflip, vflip) as PyAV writes them; the expected (rotation, mirrored) the source reports.
ORIENTATIONS = [
    pytest.param(90, False, False, (90, False), id="portrait-90"),
    pytest.param(-90, False, False, (270, False), id="portrait-270"),
    pytest.param(180, False, False, (180, False), id="upside-down"),
    pytest.param(0, True, False, (0, True), id="mirrored"),
    pytest.param(0, False, True, (180, True), id="flipped-vertically"),
    pytest.param(90, True, False, (270, True), id="90-mirrored"),
    pytest.param(90, False, True, (90, True), id="90-flipped"),
    pytest.param(0, False, False, (0, False), id="identity"),
]


@pytest.mark.parametrize(("degrees", "hflip", "vflip", "expected"), ORIENTATIONS)
def test_frames_come_in_display_orientation(tmp_path: Path, degrees, hflip, vflip, expected) -> None:
    path = media.rotated(tmp_path / "phone.mp4", degrees, hflip=hflip, vflip=vflip, frames=3)
    with av.open(str(path)) as container:
        raw = next(container.decode(video=0))
        data = raw.side_data.get("DISPLAYMATRIX")  # the mp4 muxer stores no identity matrix
        matrix = struct.unpack("=9i", bytes(data)) if data is not None else IDENTITY
        stored = raw.to_ndarray(format="rgb24")
    src, frames = _frames(path)
    reference = _displayed_by_matrix(stored, matrix)
    np.testing.assert_array_equal(frames[0].image.numpy(), reference)
    assert (src.info.rotation, src.info.mirrored) == expected
    assert (src.info.height, src.info.width) == reference.shape[:2] == tuple(frames[0].image.shape[:2])
    assert all(f.image.is_contiguous() for f in frames)
    assert any("turned for display" in n for n in src.info.notes) == (expected != (0, False))


def test_portrait_phone_clip_is_upright(tmp_path: Path) -> None:
    # A plain reading of "rotate 90 degrees counterclockwise": the stored top-right corner becomes the
    # displayed top-left one, and the picture is taller than wide.
    path = media.rotated(tmp_path / "phone.mp4", 90, frames=1)
    _src, frames = _frames(path)
    stored = media.dog_frames(1)[0]
    shown = frames[0].image.numpy()
    assert shown.shape == (1280, 720, 3)
    np.testing.assert_array_equal(shown[0, 0], stored[0, -1])
    np.testing.assert_array_equal(shown[-1, -1], stored[-1, 0])


@pytest.mark.parametrize(("matrix", "expected"), [
    pytest.param(IDENTITY, Orientation(), id="identity"),
    pytest.param((0, 0, 0, 0, 0, 0, 0, 0, 0), Orientation(), id="all-zero-damaged-header"),
    pytest.param((0, -131072, 0, 131072, 0, 0, 0, 0, 1 << 30), Orientation(90), id="scaled-90"),
    pytest.param((46341, -46341, 0, 46341, 46341, 0, 0, 0, 1 << 30), None, id="45-degrees"),
    pytest.param((65536, 65536, 0, 0, 65536, 0, 0, 0, 1 << 30), None, id="skew"),
])
def test_display_matrices_that_are_not_right_angles(matrix, expected) -> None:
    assert Orientation.from_matrix(matrix) == expected


def test_a_non_right_angle_is_delivered_as_stored_and_said(tmp_path: Path) -> None:
    path = media.copy_packets(media.DOG, tmp_path / "tilted.mp4", frames=2,
                              setup=lambda s: s.set_display_rotation(30))
    src, frames = _frames(path)
    assert tuple(frames[0].image.shape) == (720, 1280, 3)
    assert any("not a right-angle rotation" in n for n in src.info.notes)


# --- pixel shape, odd sizes ----------------------------------------------------------------------


def test_non_square_pixels_are_shown_square(tmp_path: Path) -> None:
    originals = media.dog_frames(4)
    # Anamorphic: 640 stored columns, each pixel twice as wide as tall; a player shows 1280x720.
    path = media.encode(tmp_path / "anamorphic.mp4", originals, width=640, height=720, sar=Fraction(2))
    src, frames = _frames(path)
    assert (src.info.width, src.info.height) == (1280, 720)
    assert {tuple(f.image.shape) for f in frames} == {(720, 1280, 3)}
    assert any("2:1 (sample aspect ratio)" in n for n in src.info.notes)
    # Halving and restoring the width blurs edges: close to the original on average, not equal.
    error = np.abs(frames[0].image.numpy().astype(int) - originals[0].astype(int)).mean()
    assert error < 6, error


def test_a_nonsense_pixel_shape_is_ignored_and_said(tmp_path: Path) -> None:
    path = media.encode(tmp_path / "sar.mp4", media.dog_frames(2), width=640, height=360, sar=Fraction(100))
    src, frames = _frames(path)
    assert tuple(frames[0].image.shape) == (360, 640, 3)
    assert any("100:1 is no real pixel shape" in n for n in src.info.notes)


@pytest.mark.parametrize(("codec", "pix_fmt"), [("libx264", "yuv444p"), ("ffv1", "yuv420p")])
def test_odd_sizes_come_out_whole_and_contiguous(tmp_path: Path, codec: str, pix_fmt: str) -> None:
    path = media.encode(tmp_path / "odd.mkv", media.dog_frames(3), width=321, height=241, codec=codec,
                        pix_fmt=pix_fmt)
    with av.open(str(path)) as container:
        reference = next(container.decode(video=0)).to_ndarray(format="rgb24")
    src, frames = _frames(path)
    assert (src.info.width, src.info.height) == (321, 241)
    assert all(tuple(f.image.shape) == (241, 321, 3) and f.image.is_contiguous() for f in frames)
    np.testing.assert_array_equal(frames[0].image.numpy(), reference)


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "format"), [(".mp4", None), (".mkv", None), (".ts", None),
                                                (".mov", None), (".h264", "h264")],
                         ids=["mp4-1_30000", "mkv-1_1000", "ts-90khz-starts-late", "mov", "raw-h264-no-pts"])
def test_timestamps_start_where_the_stream_does_and_keep_increasing(tmp_path: Path, suffix, format) -> None:
    path = media.copy_packets(media.DOG, tmp_path / f"clip{suffix}", frames=30, format=format)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream_pts = [f.time for f in container.decode(stream)]
    src, frames = _frames(path)
    pts = [f.pts for f in frames]
    assert len(frames) == len(stream_pts) >= 30 and all(p is not None for p in pts)
    assert all(b > a for a, b in itertools.pairwise(pts))
    assert src.info.start_pts == pts[0]
    if stream_pts[0] is None:  # raw H.264 carries no time: frames are timed at the stated rate from 0
        assert pts[0] == 0.0 and src.stats.pts_guessed == len(frames)
        np.testing.assert_allclose(np.diff(pts), 1 / src.info.fps)
    else:  # the container's own times, whatever its time base and start
        np.testing.assert_allclose(pts, stream_pts, atol=1e-9)
        assert src.stats.pts_guessed == src.stats.pts_fixed == 0
        np.testing.assert_allclose(np.diff(pts), 1001 / 30000, atol=1e-3)
    assert src.stats.lost == 0


@pytest.mark.parametrize("suffix", [".ts", ".mkv"])
def test_a_recording_that_starts_late_says_where(tmp_path: Path, suffix: str) -> None:
    # A segment cut from a longer recording keeps its clock: outputs subtract start_pts to begin at 0.
    path = media.copy_packets(media.DOG, tmp_path / f"segment{suffix}", frames=5, start_s=10.0)
    src, frames = _frames(path)
    assert src.info.start_pts == frames[0].pts == pytest.approx(10.0, abs=0.1)


# --- streams with nothing to show ----------------------------------------------------------------


def test_a_stream_whose_every_picture_is_undecodable_fails_at_open(tmp_path: Path) -> None:
    path = media.zeroed_samples(tmp_path / "zeroed.mp4")
    with pytest.raises(SourceError, match=r"zeroed\.mp4: its video stream has no decodable picture"):
        _ = open_source(path).info


def test_a_container_with_a_track_and_no_frames_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "empty.mkv"
    with av.open(str(media.DOG)) as src, av.open(str(path), "w") as dst:
        dst.add_stream_from_template(src.streams.video[0])
        dst.start_encoding()  # header written, not one frame
    with pytest.raises(SourceError, match=r"empty\.mkv: ends before its first frame"):
        _ = open_source(path).info
