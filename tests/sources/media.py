"""Test media built from the real clips in tests/media, the way phones, tagging tools and cameras write
them: packets copied as they are (no re-encode) into a new container with cover art, a display matrix,
or another time base; or a few frames re-encoded where the stream itself must differ (pixel shape, an
odd size). Everything is written under the caller's temporary directory; nothing is committed.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

MEDIA = Path(__file__).parents[1] / "media"
DOG = MEDIA / "01_dog.mp4"  # 1280x720, 289 frames at 30000/1001, B-frames, index at the front


def copy_packets(clip: Path, out: Path, *, frames: int = 30, format: str | None = None, start_s: float = 0.0,
                 setup: Callable[[av.stream.Stream], None] | None = None) -> Path:
    """At least the first ``frames`` video packets of ``clip``, copied without re-encoding into ``out``
    (the container follows the suffix, or ``format``), every time moved ``start_s`` seconds later (a
    recording that starts mid-way); ``setup`` may change the new stream first. The
    copy ends where the frames copied are the first ones in display order with no hole (B-frames come
    in decode order), so the result is a whole short clip, not a damaged one."""
    with av.open(str(clip)) as src, av.open(str(out), "w", format=format) as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        if setup is not None:
            setup(vout)
        shift = round(start_s / vin.time_base)
        for packet in _whole_clip(src.demux(vin), frames):
            packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            packet.stream = vout
            dst.mux(packet)
    return out


def _whole_clip(packets, frames: int):
    shown: list[int] = []
    for packet in packets:
        if packet.dts is None:
            continue
        if len(shown) >= frames and max(shown) - min(shown) == (len(shown) - 1) * packet.duration:
            return
        shown.append(packet.pts)
        yield packet


def rotated(out: Path, degrees: int, *, hflip: bool = False, vflip: bool = False, frames: int = 10) -> Path:
    """01_dog with a display matrix, as phones record portrait video (PyAV's ``set_display_rotation``:
    counterclockwise degrees, then the flips)."""
    return copy_packets(DOG, out, frames=frames,
                        setup=lambda s: s.set_display_rotation(degrees, hflip=hflip, vflip=vflip))


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _boxes(data: bytes, start: int, end: int):
    at = start
    while at < end:
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        yield kind, at, size
        at += size


def jpeg(width: int = 160, height: int = 120) -> bytes:
    """A small JPEG: left half white, right half black."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = 255
    buf = io.BytesIO()
    av.VideoFrame.from_ndarray(image, format="rgb24").to_image().save(buf, format="JPEG")
    return buf.getvalue()


def with_cover_art(out: Path, *, frames: int = 60, video: bool = True) -> Path:
    """01_dog with iTunes-style cover art (``moov/udta/meta/ilst/covr``) written before the video track,
    as tagging tools do: FFmpeg lists it as video stream 0 with the ``attached_pic`` disposition. The
    video is written with its index at the end, so growing the index moves no sample data. Without
    ``video`` the track is left out and only the cover remains."""
    plain = copy_packets(DOG, out.with_suffix(".plain.mp4"), frames=frames)
    data = plain.read_bytes()
    (_, moov_at, moov_size), = [b for b in _boxes(data, 0, len(data)) if b[0] == b"moov"]
    assert moov_at + moov_size == len(data), "the index must come last for this rewrite"
    children = list(_boxes(data, moov_at + 8, moov_at + moov_size))
    covr = _box(b"covr", _box(b"data", struct.pack(">II", 13, 0) + jpeg()))  # 13: JPEG
    hdlr = _box(b"hdlr", bytes(8) + b"mdirappl" + bytes(9))
    udta = _box(b"udta", _box(b"meta", bytes(4) + hdlr + _box(b"ilst", covr)))
    mvhd = b"".join(data[a:a + n] for k, a, n in children if k == b"mvhd")
    rest = b"".join(data[a:a + n] for k, a, n in children if k != b"mvhd" and (video or k != b"trak"))
    out.write_bytes(data[:moov_at] + _box(b"moov", mvhd + udta + rest))
    plain.unlink()
    return out


def with_thumbnail_track(out: Path, *, frames: int = 60) -> Path:
    """01_dog after a one-frame MJPEG track listed first and marked default (how FFmpeg's mp4 muxer
    stores a cover picture): FFmpeg's own best-stream choice is the thumbnail."""
    with av.open(str(DOG)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        thumb = dst.add_stream("mjpeg")
        thumb.width, thumb.height, thumb.pix_fmt = 160, 120, "yuvj420p"
        thumb.disposition = av.stream.Disposition.default
        vout = dst.add_stream_from_template(vin)
        vout.disposition = 0
        picture = np.zeros((120, 160, 3), np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
        frame.pts = 0
        for packet in thumb.encode(frame) + thumb.encode(None):
            packet.pts = packet.dts = 0
            dst.mux(packet)
        for packet in _whole_clip(src.demux(vin), frames):
            packet.stream = vout
            dst.mux(packet)
    return out


def dog_frames(n: int) -> list[np.ndarray]:
    """The first ``n`` frames of 01_dog as [720, 1280, 3] uint8 RGB."""
    with av.open(str(DOG)) as src:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), src.decode(video=0))]


def encode(out: Path, images: list[np.ndarray], *, width: int, height: int, sar: Fraction | None = None,
           codec: str = "libx264", pix_fmt: str = "yuv420p", rate: Fraction = Fraction(30)) -> Path:
    """``images`` scaled to ``width`` x ``height`` and encoded; ``sar`` is written as the stream's sample
    aspect ratio (a player shows the picture ``width * sar`` wide)."""
    with av.open(str(out), "w") as dst:
        stream = dst.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(width=width, height=height)
            frame.pts = i
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    return out


def zeroed_samples(out: Path, *, frames: int = 30) -> Path:
    """01_dog's first frames with every sample's bytes zeroed and the index intact: a video stream that
    describes itself fully and holds no decodable picture."""
    plain = copy_packets(DOG, out.with_suffix(".plain.mp4"), frames=frames)
    data = bytearray(plain.read_bytes())
    (_, at, size), = [b for b in _boxes(bytes(data), 0, len(data)) if b[0] == b"mdat"]
    data[at + 8:at + size] = bytes(size - 8)
    out.write_bytes(bytes(data))
    plain.unlink()
    return out
