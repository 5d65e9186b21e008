"""Video files and HTTP(S) URLs: every frame, in order, decoded by PyAV on the source's thread, as a
player shows them (stream choice, orientation, pixel shape, timing: ``engine.sources._av``).

What each kind of bad file does (tests/sources/test_errors.py, test_file.py, test_damage.py):
- missing, a directory, a text file, audio only, only cover art, an unknown codec, an mp4 whose index
  (moov atom) is missing, a video stream with no decodable picture: ``SourceError`` when the source
  opens, before any output exists.
- a still image (JPEG, PNG): valid, a video of one frame, so a picture can be segmented like a clip.
- truncated (cut short after its index): every whole frame before the cut is delivered, then
  ``SourceError`` says the file is truncated and how many of its frames it held.
- an index that lists frames the file does not hold although the file is not cut short: every frame
  that can be read is delivered, then ``SourceError`` says the index or data is damaged.
- damaged bytes inside: packets the decoder rejects are skipped and counted (``stats.corrupt``), the
  frames they cost are counted at the end (``stats.lost``: declared minus decoded), and the stream goes
  on; ``loss_summary()`` says what was lost.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from pathlib import Path

from engine.errors import ConfigError, SourceError
from engine.sources._av import NoPicture, VideoDecoder, open_video, reason, source_info
from engine.sources.base import Picture, Source, SourceInfo


class FileSource(Source):
    """A local video file (or still image): not live by default, so every frame arrives in order."""

    def __init__(self, path: str | Path, *, live: bool = False, buffer_size: int = 2,
                 realtime: bool = False) -> None:
        super().__init__(str(path), live=live, buffer_size=buffer_size, realtime=realtime)
        self._decoder: VideoDecoder | None = None

    def _open(self) -> SourceInfo:
        path = Path(self.uri)
        if not path.exists():
            raise SourceError(f"{self.uri}: no such file; check the path")
        if path.is_dir():
            raise SourceError(f"{self.uri}: is a directory, not a video file; pass a file inside it")
        try:
            self._decoder = open_video(self.uri, live=self.live, stats=self.stats)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(self._open_failure(path, exc)) from exc
        return self._first_picture(self._decoder)

    def _first_picture(self, decoder: VideoDecoder) -> SourceInfo:
        """Decode the first picture (its size and pts are the stream's, whatever the header says)."""
        try:
            decoder.start()
        except NoPicture:
            self._release()
            raise SourceError(f"{self.uri}: its video stream has no decodable picture; check the file "
                              f"with another player") from None
        except SourceError:
            self._release()
            raise
        except Exception as exc:
            self._release()
            raise SourceError(f"{self.uri}: cannot read its first picture: {self._read_failure(exc)}") from exc
        return source_info(decoder, uri=self.uri, live=self.live, frame_count=decoder.declared_frames)

    def _open_failure(self, path: Path, exc: Exception) -> str:
        import av

        if isinstance(exc, av.error.InvalidDataError):
            with path.open("rb") as f:
                head = f.read(12)
                text = f.read(4096)
            if head[4:8] == b"ftyp":  # an ISO-BMFF (mp4/mov) file whose index never arrived
                return (f"{self.uri}: truncated or damaged mp4, its index (moov atom) is missing or "
                        f"unreadable; re-copy or re-record the file")
            if _looks_like_text(head + text):
                return f"{self.uri}: is a text file, not a video; pass a video file"
            return f"{self.uri}: not a video file PyAV can read; pass a video (mp4, mkv, ts, ...)"
        if isinstance(exc, EOFError):  # FFmpeg's EOF, raised while reading the container's header
            return (f"{self.uri}: ends before its first frame (an empty or truncated file); re-copy or "
                    f"re-record it")
        return f"{self.uri}: cannot open: {reason(exc)}; check the file"

    def _pictures(self) -> Iterator[Picture]:
        decoder = self._decoder
        assert decoder is not None, "_open runs before the decode thread starts"
        delivered = 0
        try:
            for picture in decoder.pictures():
                yield picture
                delivered += 1
        except SourceError:
            raise
        except Exception as exc:
            self._count_lost(decoder)
            raise SourceError(f"{self.uri}: reading stopped after {delivered} frames: "
                              f"{self._read_failure(exc)}") from exc
        if self.stopping:
            return
        self._count_lost(decoder)
        declared = decoder.declared_frames
        if declared is not None and decoder.packets < declared:
            raise SourceError(f"{self.uri}: {self._short_read(decoder, declared, delivered)}")

    def _count_lost(self, decoder: VideoDecoder) -> None:
        """At the end of a file that declares its length, the exact count replaces the estimate."""
        declared = decoder.declared_frames
        if declared is not None:
            self.stats.lost = max(0, declared - decoder.discarded - self.stats.decoded)

    def _short_read(self, decoder: VideoDecoder, declared: int, delivered: int) -> str:
        """Why fewer packets than the header declares could be read: cut short, or damaged inside."""
        held = f"{decoder.packets} of the {declared} frames its header declares"
        size = decoder.container.size
        needed = _cut_through(decoder, size)
        if needed is not None:
            return (f"truncated: the file ends at byte {size:,} but its index refers to data up to byte "
                    f"{needed:,}; it holds {held} ({delivered} delivered); re-copy or re-record the file")
        return (f"damaged: its index or data is broken (the file is not cut short); {held} could be read "
                f"({delivered} delivered); re-copy the file or repair it (e.g. ffmpeg -i IN -c copy OUT.mp4)")

    def _read_failure(self, exc: Exception) -> str:
        return f"{reason(exc)}; check the file"

    def _release(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


def _cut_through(decoder: VideoDecoder, size: int) -> int | None:
    """The byte the container's index says the data runs to, when the file was cut short: the samples
    the index places past the end of the file are all its last ones, and the first of them starts
    inside the file (the cut runs through it) or right at its end. None otherwise: no index, no sample
    past the end, or one the index misplaces (a damaged offset), which is damage, not truncation."""
    try:
        entries = sorted((e.pos, e.pos + e.size) for e in decoder.stream.index_entries if e.pos >= 0)
    except Exception:  # noqa: BLE001 - an index PyAV cannot read gives no evidence either way
        return None
    if size <= 0 or not entries:
        return None
    past = [i for i, (_, end) in enumerate(entries) if end > size]
    if not past or past != list(range(past[0], len(entries))) or entries[past[0]][0] > size:
        return None
    return entries[-1][1]


def _looks_like_text(data: bytes) -> bool:
    if not data or b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3  # only a character cut at the end of the sample
    return True


class HttpSource(FileSource):
    """A video file served over HTTP(S), read as it downloads; every frame, in order.

    Every wait for the server is bounded by ``io_timeout_s``. An mp4 whose index (moov atom) is at the
    end needs a server that honours byte ranges; one with the index at the front is read straight
    through, so any server does.
    """

    def __init__(self, url: str, *, live: bool = False, buffer_size: int = 2, realtime: bool = False,
                 io_timeout_s: float = 5.0) -> None:
        super().__init__(url, live=live, buffer_size=buffer_size, realtime=realtime)
        if not (isinstance(io_timeout_s, (int, float)) and math.isfinite(io_timeout_s) and io_timeout_s > 0):
            raise ConfigError(f"io_timeout_s must be a number of seconds > 0, got {io_timeout_s!r}")
        self.io_timeout_s = io_timeout_s

    def _open(self) -> SourceInfo:
        try:
            self._decoder = open_video(self.uri, live=self.live, stats=self.stats, timeout_s=self.io_timeout_s)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.uri}: cannot open: {self._why(exc)}") from exc
        return self._first_picture(self._decoder)

    def _why(self, exc: Exception) -> str:
        import av

        if isinstance(exc, av.error.OSError) and exc.errno == errno.EIO:
            # FFmpeg's http reader failed to seek: the server ignored a byte range. An mp4 with its
            # index at the end is read to the end to find it, then cannot go back to the start.
            return ("input/output error; if it is an mp4 with its index at the end, serve it with "
                    "byte-range support or move the index to the front "
                    "(ffmpeg -i IN -c copy -movflags +faststart OUT.mp4)")
        return f"{reason(exc, timeout_s=self.io_timeout_s)}; check the URL and that the server is up"

    def _read_failure(self, exc: Exception) -> str:
        return self._why(exc)
