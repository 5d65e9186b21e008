"""Video files and HTTP(S) URLs: every frame, in order, decoded by PyAV on the source's thread.

What each kind of bad file does (tests/sources/test_errors.py):
- missing, a directory, a text file, audio only, an unknown codec, an mp4 whose index (moov atom) is
  missing: ``SourceError`` when the source opens, before any output exists.
- a still image (JPEG, PNG): valid, a video of one frame, so a picture can be segmented like a clip.
- truncated after its index (the mp4 was cut, its moov is at the front): every frame before the cut is
  delivered, then ``SourceError`` says the file is truncated and how many frames it held.
- damaged bytes inside: the packets the decoder rejects are skipped and counted (``stats.corrupt``); the
  stream goes on (see ``engine.sources._av``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

from engine.errors import SourceError
from engine.sources._av import VideoDecoder, open_video, reason
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
            self._decoder = open_video(self.uri, live=self.live)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(self._open_failure(path, exc)) from exc
        return self._info_from(self._decoder)

    def _open_failure(self, path: Path, exc: Exception) -> str:
        import av

        if isinstance(exc, av.error.InvalidDataError):
            with path.open("rb") as f:
                head = f.read(12)
                text = f.read(4096)
            if head[4:8] == b"ftyp":  # an ISO-BMFF (mp4/mov) file whose index never arrived
                return (f"{self.uri}: truncated or damaged mp4, its index (moov atom) is missing; "
                        f"re-copy or re-record the file")
            if _looks_like_text(head + text):
                return f"{self.uri}: is a text file, not a video; pass a video file"
            return f"{self.uri}: not a video file PyAV can read; pass a video (mp4, mkv, ts, ...)"
        return f"{self.uri}: cannot open: {reason(exc)}; check the file"

    def _info_from(self, decoder: VideoDecoder) -> SourceInfo:
        return SourceInfo(uri=self.uri, live=self.live, width=decoder.width, height=decoder.height,
                          fps=decoder.fps, frame_count=decoder.declared_frames, codec=decoder.codec)

    def _pictures(self) -> Iterator[Picture]:
        decoder = self._decoder
        assert decoder is not None, "_open runs before the decode thread starts"
        delivered = 0
        try:
            for picture in decoder.pictures():
                self.stats.corrupt = decoder.corrupt
                yield picture
                delivered += 1
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.uri}: reading stopped after {delivered} frames: "
                              f"{self._read_failure(exc)}") from exc
        self.stats.corrupt = decoder.corrupt
        declared = decoder.declared_frames
        if declared is not None and decoder.packets < declared and not self.stopping:
            raise SourceError(
                f"{self.uri}: truncated: it holds {decoder.packets} of the {declared} frames its header "
                f"declares (the {delivered} decodable were delivered); re-copy or re-record the file"
            )

    def _read_failure(self, exc: Exception) -> str:
        return f"{reason(exc)}; check the file"

    def _release(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


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
        self.io_timeout_s = io_timeout_s

    def _open(self) -> SourceInfo:
        try:
            self._decoder = open_video(self.uri, live=self.live, timeout_s=self.io_timeout_s)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.uri}: cannot open: {self._why(exc)}") from exc
        return self._info_from(self._decoder)

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
