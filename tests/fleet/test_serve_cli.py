"""``streamseg serve`` as a user runs it: a subprocess with three synthetic streams on random weights,
driven through its control API, scraped through its metrics endpoint, drained; and its mistakes as one
line each (a bad file, no Ray, a Ray address that does not answer)."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.serve_doubles import call, wait_for
from tests.test_cli import ROOT, _user_error

CONFIG = """\
weights = "random"
tracker = "none"
imgsz = 64
device = "cpu"
realtime = true
live = true

[serve]
[serve.degrade]
down_after_s = 0.5
window_s = 0.5

[[streams]]
name = "short"
source = "synthetic:seed=1,frames=45,size=160x120,fps=60"
jsonl = "TMP/short.jsonl"

[[streams]]
name = "long"
source = "synthetic:seed=2,frames=100000,size=160x120,fps=15"
jsonl = "TMP/long.jsonl"
budget_ms = 1.0

[[streams]]
name = "broken"
source = "TMP/missing.mp4"
jsonl = "TMP/broken.jsonl"
"""


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends with a cut line"
    return [json.loads(line) for line in data.splitlines()]


class _Stderr:
    """The server's stderr, read on a thread: its lines, and the URLs it announces."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc) -> None:
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    def url(self, pattern: str, timeout_s: float = 120.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m.group(1)
            try:
                self._queue.get(timeout=0.5)
            except queue.Empty:
                pass
        raise AssertionError(f"the server never printed {pattern!r}: {self.lines}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_serve_runs_streams_takes_commands_exports_metrics_and_drains_whole(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text(CONFIG.replace("TMP", str(tmp_path)))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(config), "--metrics-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = _Stderr(proc)
    try:
        control = err.url(r"control API at (http://\S+)")
        metrics = err.url(r"metrics at (http://\S+)/metrics")

        def views() -> dict[str, dict]:
            return {s["name"]: s for s in call(f"{control}/streams")[1]["streams"]}

        wait_for(lambda: views().get("short", {}).get("state") == "ended", timeout_s=120, what="the short stream's end")
        assert views()["broken"]["state"] == "failed" and "missing.mp4" in views()["broken"]["error"]
        assert views()["long"]["state"] == "running"
        scraped = _scrape(f"{metrics}/metrics")
        lines = _lines(tmp_path / "short.jsonl")
        frames = [r["frame"] for r in lines]
        key = ("stream", "short"),
        assert scraped[("streamseg_frames_total", key)] == len(lines)
        assert scraped[("streamseg_frames_dropped_total", (("reason", "buffer"), *key))] == frames[-1] + 1 - len(frames)
        wait_for(lambda: _scrape(f"{metrics}/metrics").get(
            ("streamseg_degradation_events_total", (("kind", "cannot_hold"), ("stream", "long")))) == 1,
            what="the impossible budget reported")
        assert urllib.request.urlopen(f"{metrics}/readyz", timeout=5).status == 200

        added = {"name": "extra", "source": "synthetic:seed=3,frames=100000,size=160x120,fps=15",
                 "jsonl": str(tmp_path / "extra.jsonl")}
        assert call(f"{control}/streams", "POST", added)[0] == 201
        assert call(f"{control}/streams", "POST", added)[0] == 409
        wait_for(lambda: views()["extra"]["frames"] >= 3, what="the added stream's results")
        status, removed = call(f"{control}/streams/extra", "DELETE")
        assert status == 200 and len(_lines(tmp_path / "extra.jsonl")) == removed["frames"]
        assert call(f"{control}/streams/long/budget", "PUT", {"budget_ms": None})[0] == 200

        assert call(f"{control}/drain", "POST")[0] == 202
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err.lines  # one stream failed; the others ended whole
    assert "Traceback" not in "\n".join(err.lines)
    assert any(line.startswith("streamseg: stream broken failed: ") for line in err.lines)
    for name in ("short", "long", "extra"):
        frames = [r["frame"] for r in _lines(tmp_path / f"{name}.jsonl")]
        assert frames == sorted(set(frames)) and frames, name
    assert not (tmp_path / "broken.jsonl").exists()
    assert re.search(r"^long\s+ended", out, re.M) and re.search(r"^broken\s+failed.*missing\.mp4", out, re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MINIMAL = '[[streams]]\nname = "cam1"\nsource = "synthetic:seed=1,frames=5"\n'


@pytest.mark.parametrize(("text", "flags", "needles"), [
    pytest.param(MINIMAL + '[[streams]]\nname = "cam1"\nsource = "x.mp4"\n', [], ["appears twice"], id="duplicate"),
    pytest.param("colour = 1\n" + MINIMAL, [], ["unknown key colour"], id="unknown-key"),
    pytest.param(MINIMAL, ["--control", "0.0.0.0:0"], ["reached from other machines", "token"],
                 id="beyond-loopback-without-token"),
    pytest.param(MINIMAL, ["--ray", "127.0.0.1:{port}"], ["cannot reach the Ray cluster", "nothing listens there"],
                 id="ray-address-not-answering"),
    pytest.param(MINIMAL, ["--ray", "auto", "--no-ray-module"], ["--ray needs Ray", "pip install 'streamseg[ray]'"],
                 id="ray-not-installed"),
])
def test_serve_mistakes_are_one_line(tmp_path, text, flags, needles):
    config = tmp_path / "serve.toml"
    config.write_text(text)
    path = str(ROOT)
    if "--no-ray-module" in flags:  # an environment without Ray: `import ray` fails as it does there
        flags = [f for f in flags if f != "--no-ray-module"]
        (tmp_path / "fake" / "ray").mkdir(parents=True)
        (tmp_path / "fake" / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
        path = f"{tmp_path / 'fake'}{os.pathsep}{ROOT}"
    flags = [f.format(port=_free_port()) for f in flags]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", "serve", str(config), *flags], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": path})
    _user_error(proc, *needles)
    assert time.monotonic() - started < 60  # refused before any stream or network starts
