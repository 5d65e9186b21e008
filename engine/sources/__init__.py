"""Video sources: files, HTTP(S) URLs, RTSP streams, V4L2 cameras and synthetic scenes, each decoded on
its own thread into ``engine.types.Frame`` values. ``open_source`` picks the kind from the input's text.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from engine.errors import ConfigError, SourceError
from engine.sources.base import Picture, Source, SourceInfo, SourceStats
from engine.sources.camera import CameraSource
from engine.sources.file import FileSource, HttpSource
from engine.sources.live import ReconnectPolicy
from engine.sources.memory import ArraySource
from engine.sources.rtsp import RtspSource
from engine.sources.synthetic import GroundTruth, SceneObject, SyntheticScene, SyntheticSource, to_video

__all__ = [
    "ArraySource",
    "CameraSource",
    "FileSource",
    "GroundTruth",
    "HttpSource",
    "Picture",
    "ReconnectPolicy",
    "RtspSource",
    "SceneObject",
    "Source",
    "SourceInfo",
    "SourceStats",
    "SyntheticScene",
    "SyntheticSource",
    "open_source",
    "to_video",
]

_FORMS = ("a file path, rtsp://HOST/PATH, http(s)://HOST/PATH, /dev/videoN (or v4l2:///dev/videoN) "
          "or synthetic:seed=0,frames=300,size=640x480,objects=6")


def open_source(uri: str | Path, *, live: bool | None = None, buffer_size: int = 2, realtime: bool = False,
                reconnect_attempts: int | None = None, reconnect_interval_s: float = 1.0,
                give_up_s: float | None = 600.0, io_timeout_s: float = 5.0) -> Source:
    """A source for ``uri``; nothing is opened until ``.info`` or ``start()`` (``with``).

    Args:
        uri: a file path or ``file://`` URL; ``rtsp://`` / ``rtsps://``; ``http://`` / ``https://``;
            ``/dev/videoN`` or ``v4l2:///dev/videoN?size=1280x720&fps=30&pixel_format=mjpeg``;
            ``synthetic:seed=3,frames=300,size=640x480,objects=6,fps=30``.
        live: newest-frame-wins buffering (drops counted) when True; every frame, in order, when False.
            None: live for RTSP and cameras, not for files, URLs and synthetic scenes.
        buffer_size: frames held between the decoder and the consumer.
        realtime: hand frames out no faster than their timestamps (a file then paces like a camera).
        reconnect_attempts: RTSP and cameras: reconnection attempts per outage before ``SourceError``;
            None: no count limit (``give_up_s`` bounds the outage); 0: no reconnection.
        reconnect_interval_s: RTSP and cameras: seconds before each reconnection attempt (fixed).
        give_up_s: RTSP and cameras: seconds a lost stream may stay without frames before
            ``SourceError``; None: never give up.
        io_timeout_s: network and device reads: the longest single wait for data, in seconds (an
            RTSP connection attempt makes at most three: see ``engine.sources.live``).

    Raises:
        SourceError: the input's form is not one of the above (the input itself is checked at open).
        ConfigError: an option is out of range.
    """
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ConfigError(f"buffer_size must be an integer >= 1, got {buffer_size!r}")
    # One check for every kind, so a bad reconnect option fails even where it would go unused.
    policy = ReconnectPolicy(reconnect_interval_s=reconnect_interval_s, give_up_s=give_up_s,
                             reconnect_attempts=reconnect_attempts, io_timeout_s=io_timeout_s)
    text = str(uri).strip()
    if not text:
        raise SourceError(f"empty source; pass {_FORMS}")
    common = {"buffer_size": buffer_size, "realtime": realtime}
    network = {"reconnect_attempts": policy.reconnect_attempts, "io_timeout_s": policy.io_timeout_s,
               "reconnect_interval_s": policy.reconnect_interval_s, "give_up_s": policy.give_up_s}

    if isinstance(uri, Path):
        return FileSource(uri, live=bool(live), **common)
    if text.startswith("synthetic:"):
        scene = SyntheticScene.from_spec(text.removeprefix("synthetic:"))
        return SyntheticSource(scene, live=bool(live), uri=text, **common)
    if text.startswith("/dev/video"):
        return CameraSource(text, live=live is not False, **common, **network)
    if "://" not in text:
        return FileSource(text, live=bool(live), **common)

    scheme = text.split("://", 1)[0].lower()
    parts = urlsplit(text)
    if scheme in ("rtsp", "rtsps"):
        _check_host(text, parts)
        return RtspSource(text, live=live is not False, **common, **network)
    if scheme in ("http", "https"):
        _check_host(text, parts)
        return HttpSource(text, live=bool(live), io_timeout_s=io_timeout_s, **common)
    if scheme == "v4l2":
        return _camera(text, parts, live=live is not False, **common, **network)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceError(f"{text}: a file:// URL names a local file; write file:///PATH")
        return FileSource(unquote(parts.path), live=bool(live), **common)
    raise SourceError(f"{text}: unsupported scheme '{scheme}://'; pass {_FORMS}")


def _check_host(text: str, parts) -> None:
    try:
        port = parts.port
    except ValueError:
        raise SourceError(f"{text}: malformed URL, its port is not a number in 0..65535; "
                          f"write it as SCHEME://HOST[:PORT]/PATH") from None
    if not parts.hostname or port == 0:
        raise SourceError(f"{text}: malformed URL, it names no host; write it as SCHEME://HOST[:PORT]/PATH")


def _camera(text: str, parts, *, live: bool, **kwargs) -> CameraSource:
    if parts.netloc or not parts.path.startswith("/dev/"):
        raise SourceError(f"{text}: a v4l2 URL names a device path; write v4l2:///dev/videoN")
    options: dict[str, object] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if key == "size":
                w, h = value.lower().split("x")
                options["size"] = (int(w), int(h))
            elif key == "fps":
                options["fps"] = float(value)
            elif key == "pixel_format" and value:
                options["pixel_format"] = value
            else:
                raise ValueError
        except ValueError:
            raise SourceError(f"{text}: bad camera option '{key}={value}'; use size=WxH, fps=N, "
                              f"pixel_format=NAME (e.g. mjpeg)") from None
    return CameraSource(parts.path, live=live, uri=text, **kwargs, **options)  # type: ignore[arg-type]
