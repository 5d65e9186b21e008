"""An RTSP server that answers every request and never sends media: OPTIONS, DESCRIBE (an H.264 SDP),
SETUP and PLAY all get ``200 OK``, then the session stays open and silent. It is what a camera whose
encoder has hung looks like from the network, and what a check of the form of a connection (the
handshake worked) instead of its content (a decoded picture arrived) lets through.

A few dozen lines of socket code on 127.0.0.1; every connection runs on its own thread and every wait is
bounded, so a test that forgets to stop it cannot hang. ``sessions`` counts the PLAY requests answered:
one per connection attempt that got as far as asking for media.
"""

from __future__ import annotations

import base64
import socket
import threading
from pathlib import Path
from typing import Self


def sprop_parameter_sets(clip: Path) -> str:
    """The ``sprop-parameter-sets`` SDP value (base64 SPS,PPS) of an H.264 mp4, read from its avcC box,
    so the SDP describes a real stream (size, profile) exactly as a camera's would."""
    import av

    with av.open(str(clip)) as container:
        avcc = bytes(container.streams.video[0].codec_context.extradata)
    # avcC: version, profile, compat, level, length size, then SPS count + (len, SPS)..., PPS likewise.
    at, units = 5, []
    for count_mask in (0x1F, 0xFF):
        count = avcc[at] & count_mask
        at += 1
        for _ in range(count):
            size = int.from_bytes(avcc[at:at + 2], "big")
            units.append(base64.b64encode(avcc[at + 2:at + 2 + size]).decode())
            at += 2 + size
    return ",".join(units)


class SilentRtspServer:
    """``url`` answers the RTSP handshake with an H.264 SDP (with ``sprop`` parameter sets when given)
    and then sends nothing at all. ``port`` takes over a port another server left (a camera whose
    encoder hangs after a reboot)."""

    def __init__(self, *, sprop: str | None = None, port: int = 0) -> None:
        self.sprop = sprop
        self.sessions = 0
        self._listener = socket.create_server(("127.0.0.1", port))  # port 0: a free one
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/silent"

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join(timeout=5)
        with self._lock:
            for conn in self._conns:
                conn.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.2)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            pending += data
            while b"\r\n\r\n" in pending:
                head, pending = pending.split(b"\r\n\r\n", 1)
                try:
                    conn.sendall(self._answer(head.decode("latin-1")))
                except OSError:
                    return

    def _answer(self, request: str) -> bytes:
        lines = request.split("\r\n")
        method = lines[0].split(" ", 1)[0]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        out = ["RTSP/1.0 200 OK", f"CSeq: {headers.get('cseq', '0')}"]
        body = ""
        if method == "OPTIONS":
            out.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER")
        elif method == "DESCRIBE":
            fmtp = "packetization-mode=1" + (f";sprop-parameter-sets={self.sprop}" if self.sprop else "")
            body = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=silent\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
                    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                    f"a=fmtp:96 {fmtp}\r\na=control:track0\r\n")
            out += [f"Content-Base: {self.url}/", "Content-Type: application/sdp"]
        elif method == "SETUP":
            transport = headers.get("transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
            out += ["Session: 5117;timeout=60", f"Transport: {transport}"]
        elif method == "PLAY":
            self.sessions += 1
            out += ["Session: 5117", "Range: npt=0.000-"]
        else:  # GET_PARAMETER keep-alives, TEARDOWN
            out.append("Session: 5117")
        out.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(out) + "\r\n\r\n" + body).encode()
