"""A real RTSP server for tests: GStreamer's RTSP server streaming one clip, as an IP camera would.

Two halves in one file:
- ``RtspServer`` (imported by tests, under the project's virtualenv) starts the server as a subprocess,
  waits until it accepts connections, and can kill it and bring it back on the same port mid-stream;
- ``main()`` is that subprocess. It runs under Debian's ``/usr/bin/python3``, where the ``gi`` bindings
  live (apt: gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad); PyPI has no GStreamer RTSP server.

    /usr/bin/python3 tests/rtsp_server.py --clip CLIP.mp4 [--port 0] [--mount /clip]

The clip (H.264 in .mp4/.mov or .ts) is sent at its own frame rate, every client sharing one stream: a
camera has one sensor, so a client that connects late sees the stream from where it is. At the clip's
end the server ends the stream. It binds 127.0.0.1 only, prints ``READY <port>`` once it accepts
connections, and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import functools
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi lives; not the project's virtualenv
APT_PACKAGES = ("gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")
_START_TIMEOUT_S = 15.0  # GStreamer's first start on a machine scans its plugins; later ones take ~0.2 s
_DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".ts": "tsdemux"}


@functools.cache
def gstreamer_missing(python: str = SYSTEM_PYTHON) -> str | None:
    """Why the server cannot run with ``python``, or None when it can."""
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "print(' '.join(e for e in ('qtdemux', 'tsdemux', 'h264parse', 'rtph264pay') "
             "if Gst.ElementFactory.find(e) is None))")
    if not os.access(python, os.X_OK):
        return f"{python} is missing"
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "probing GStreamer took over 60 s"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return lines[-1] if lines else "the gi probe failed"
    return f"GStreamer elements missing: {done.stdout.strip()}" if done.stdout.strip() else None


class RtspServer:
    """The clip at ``rtsp://127.0.0.1:PORT/clip``. ``stop()`` kills the server as a crash or a power
    cut would (the socket closes under the client); ``start()`` brings it back on the same port."""

    def __init__(self, clip: Path, *, python: str = SYSTEM_PYTHON) -> None:
        self.clip = Path(clip)
        self.python = python
        self.port = 0  # 0 until the first start picks a free one
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/clip"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not running"
        return self._proc.pid

    def start(self) -> RtspServer:
        """Start and wait until it accepts connections. Fails the calling test (not a skip: CI installs
        GStreamer) with the apt packages to install when GStreamer is missing."""
        missing = gstreamer_missing(self.python)
        if missing:
            import pytest

            pytest.fail(f"the RTSP tests need GStreamer's RTSP server ({missing}); install it with "
                        f"`sudo apt-get install -y {APT_PACKAGES}`", pytrace=False)
        if self._proc is not None:
            raise RuntimeError("the RTSP server is already running")
        cmd = [self.python, __file__, "--clip", str(self.clip), "--port", str(self.port)]
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:  # a killed server's port can take a moment to free
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self._first_line(deadline)
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
            self.stop()
            if time.monotonic() > deadline or "cannot listen" not in line:
                raise RuntimeError(f"the RTSP server did not start: {line or 'no answer'}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.communicate(timeout=10)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _first_line(self, deadline: float) -> str:
        """The server's first stdout line; its last stderr line if it says nothing in time."""
        proc = self._proc
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline().strip()
                if line:
                    return line
        proc.kill()
        _, err = proc.communicate(timeout=10)
        return (err.strip().splitlines() or [""])[-1]


def launch_line(clip: Path) -> str:
    demux = _DEMUXERS.get(clip.suffix.lower())
    if demux is None:
        raise SystemExit(f"{clip}: unsupported container; use one of {sorted(_DEMUXERS)}")
    # config-interval=1 repeats SPS/PPS every second, so a client joining mid-stream can start decoding.
    return (f'( filesrc location="{clip}" ! {demux} ! h264parse ! '
            f"rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve one H.264 clip over RTSP on 127.0.0.1.")
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mount", default="/clip")
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"{args.clip}: no such clip")

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.clip.resolve()))
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
