"""Files and HTTP(S) URLs: every frame, in order, frame-exact; damaged and truncated files; a resolution
change mid-stream."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import FileSource, HttpSource, open_source

MEDIA = Path(__file__).parents[1] / "media"
CLIPS = sorted(MEDIA.glob("*.mp4"))


def _first_frame_by_pyav(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.stem)
def test_every_clip_decodes_frame_exact(clip: Path) -> None:
    src = open_source(clip)
    info = src.info
    assert isinstance(src, FileSource) and not info.live and info.codec == "h264"
    with src:
        frames = list(src)
    assert info.frame_count is not None and len(frames) == info.frame_count
    assert (src.stats.decoded, src.stats.delivered, src.stats.dropped) == (info.frame_count,) * 2 + (0,)
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)), "frames out of presentation order"
    assert {tuple(f.image.shape) for f in frames} == {(info.height, info.width, 3)}
    # The source's RGB conversion is PyAV's own: the same pixels, in RGB order.
    np.testing.assert_array_equal(frames[0].image.numpy(), _first_frame_by_pyav(clip))


def test_a_still_image_is_a_one_frame_video() -> None:
    src = open_source(MEDIA / "cars.jpg")
    with src:
        frames = list(src)
    assert len(frames) == 1
    assert tuple(frames[0].image.shape) == (src.info.height, src.info.width, 3)


def test_a_resolution_change_mid_stream_changes_the_frame_size(resolution_change: Path) -> None:
    src = open_source(resolution_change)
    with src:
        sizes = [tuple(f.image.shape) for f in src]
    assert sizes == [(240, 320, 3)] * 30 + [(144, 256, 3)] * 30


@pytest.fixture(scope="module")
def dog_bytes() -> bytes:
    return (MEDIA / "01_dog.mp4").read_bytes()  # 289 frames, index (moov) at the front


def test_a_truncated_file_delivers_every_whole_frame_then_says_truncated(tmp_path: Path,
                                                                         dog_bytes: bytes) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(dog_bytes[: len(dog_bytes) // 2])
    src = open_source(path)
    assert src.info.frame_count == 289  # the header still promises every frame
    delivered = []
    with src, pytest.raises(SourceError, match=r"cut\.mp4: truncated: the file ends at byte [\d,]+ but its "
                                               r"index refers to data up to byte [\d,]+; it holds \d+ of "
                                               r"the 289 frames") as err:
        for frame in src:
            delivered.append(frame.index)
    assert "\n" not in str(err.value)
    # Every frame a single-threaded PyAV decode of the same bytes gets, skipping what it rejects (the
    # packet the cut runs through): a frame-threaded decoder must be drained to give them all.
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        whole = 0
        for packet in container.demux(stream):
            try:
                whole += len(packet.decode())
            except av.error.InvalidDataError:
                pass
    assert delivered == list(range(whole)) and whole > 100
    assert f"({whole} delivered)" in str(err.value)
    assert src.stats.lost == 289 - whole and src.stats.corrupt == 1
    assert src.loss_summary() == f"{path}: 1 damaged packet skipped; {289 - whole} of 289 frames lost"


# --- HTTP(S) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["01_dog.mp4", "bedroom.mp4"], ids=["index-first", "index-last"])
def test_http_with_byte_ranges_is_frame_exact(http_server, clip: str) -> None:
    src = open_source(http_server.url(clip))
    assert isinstance(src, HttpSource) and not src.info.live
    with src:
        count = sum(1 for _ in src)
    assert count == src.info.frame_count


def test_http_without_byte_ranges_reads_an_index_first_mp4_straight_through(plain_http_server) -> None:
    src = open_source(plain_http_server.url("01_dog.mp4"))
    with src:
        count = sum(1 for _ in src)
    assert count == src.info.frame_count == 289


def test_http_without_byte_ranges_explains_an_index_last_mp4(plain_http_server) -> None:
    # FFmpeg reads to the end to find the index, then cannot seek back to the first frame: the source
    # finds out at open, where it decodes the first picture, before any output exists.
    src = open_source(plain_http_server.url("bedroom.mp4"))
    with pytest.raises(SourceError, match=r"^http://.*bedroom\.mp4: .*byte-range.*faststart"):
        _ = src.info
    src.close()
