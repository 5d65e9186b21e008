"""A real RTSP server for the tests: GStreamer's RTSP server streaming one clip, as an IP camera would.

It runs under Debian's ``/usr/bin/python3`` with the ``gi`` bindings (apt packages gstreamer1.0-rtsp,
gir1.2-gst-rtsp-server-1.0, python3-gi, gstreamer1.0-plugins-{base,good,bad}), not under the project's
virtualenv, so the tests start it as a subprocess (``tests/sources/conftest.py``).

    /usr/bin/python3 rtsp_server.py --clip CLIP.mp4 [--port 0] [--mount /clip]

The clip is sent at its own frame rate, every client sharing one stream (a camera has one sensor: a
client that connects late sees the stream from where it is, not from the start). The server prints
``READY <port>`` on stdout once it accepts connections and exits on SIGTERM or SIGINT. It binds
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

_DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".ts": "tsdemux"}


def launch_line(clip: Path) -> str:
    demux = _DEMUXERS.get(clip.suffix.lower())
    if demux is None:
        raise SystemExit(f"{clip}: unsupported container; use one of {sorted(_DEMUXERS)}")
    # config-interval=1 repeats SPS/PPS every second, so a client joining mid-stream can start decoding.
    return (f'( filesrc location="{clip}" ! {demux} ! h264parse ! '
            f"rtph264pay name=pay0 pt=96 config-interval=1 )")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--mount", default="/clip")
    parser.add_argument("--shared", type=int, default=1, help="1: one stream for every client")
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"{args.clip}: no such clip")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.clip.resolve()))
    factory.set_shared(bool(args.shared))
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
