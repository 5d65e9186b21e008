"""The engine worker and the driver's line outputs, without Ray: what a worker hands over, in what
order, and how a runner's failure reaches the driver; ``require_ray`` and ``connect`` refusing early."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from engine.errors import ConfigError, SinkError, SourceError
from engine.fleet.lines import JsonlLineWriter, LineSink
from engine.fleet.placement import StreamSpec
from engine.fleet.ray_workers import Assignment, EngineWorker, connect, require_ray
from engine.sinks.mqtt import MqttConfig, MqttPublisher

pytestmark = pytest.mark.timeout(60)


def _assign(name: str, session: int = 0, resume_after: int | None = None) -> Assignment:
    return Assignment(stream=StreamSpec(name=name, source="synthetic:seed=1"), session=session,
                      resume_after=resume_after)


def _drain_all(worker: EngineWorker, until_ended: set[str], timeout: float = 10.0):
    results, ended, deadline = [], [], time.monotonic() + timeout
    while {e.stream for e in ended} != until_ended:
        assert time.monotonic() < deadline, "the worker never reported every stream's end"
        drained = worker.drain(wait_s=0.1)
        results += drained.results
        ended += drained.ended
    return results, ended


def test_models_load_once_and_every_group_gets_them():
    loads = []
    seen = []

    def run(models, assignments, ctx):
        seen.append(models)
        for a in assignments:
            ctx.end(a.stream.name)

    worker = EngineWorker(lambda: loads.append(1) or {"weights": "w"}, run)
    worker.start([_assign("cam1")])
    worker.start([_assign("cam2")])
    _drain_all(worker, {"cam1", "cam2"})
    assert loads == [1] and seen == [{"weights": "w"}, {"weights": "w"}]


def test_results_carry_their_session_and_a_stream_ends_after_its_last_result():
    def run(models, assignments, ctx):
        for i in range(5):
            for a in assignments:
                ctx.emit(a.stream.name, i, b'{"frame":%d}' % i)
        for a in assignments:
            ctx.end(a.stream.name)

    worker = EngineWorker(None, run, queue_limit=3)  # smaller than a stream's results: emit waits
    worker.start([_assign("cam1", session=2), _assign("cam2")])
    results, ended = _drain_all(worker, {"cam1", "cam2"})
    for name, session in (("cam1", 2), ("cam2", 0)):
        assert [(r.frame, r.session) for r in results if r.stream == name] == [(i, session) for i in range(5)]
    assert all(e.error is None for e in ended)


def test_emit_waits_for_the_driver_instead_of_holding_everything():
    emitted = []

    def run(models, assignments, ctx):
        for i in range(10):
            ctx.emit("cam1", i, b"{}")
            emitted.append(i)
        ctx.end("cam1")

    worker = EngineWorker(None, run, queue_limit=4)
    worker.start([_assign("cam1")])
    time.sleep(0.3)
    assert len(emitted) == 4  # the fifth waits for a drain
    results, _ = _drain_all(worker, {"cam1"})
    assert [r.frame for r in results] == list(range(10))


def test_a_stopped_stream_ends_and_its_late_results_are_not_kept():
    started = threading.Event()

    def run(models, assignments, ctx):
        i = 0
        while not ctx.stopping("cam1"):
            ctx.emit("cam1", i, b"{}")
            started.set()
            i += 1
            time.sleep(0.01)
        ctx.emit("cam1", i, b"{}")  # after the stop: dropped
        ctx.end("cam1")

    worker = EngineWorker(None, run)
    worker.start([_assign("cam1")])
    assert started.wait(5)
    worker.stop(["cam1"])
    results, ended = _drain_all(worker, {"cam1"})
    assert [r.frame for r in results] == list(range(len(results)))
    assert ended[0].error is None


@pytest.mark.parametrize(("raised", "expected"), [
    pytest.param(SourceError("rtsp://cam: connection refused; check the camera"),
                 "rtsp://cam: connection refused; check the camera", id="user-error-as-is"),
    pytest.param(ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero (a bug in streamseg",
                 id="bug-named-as-a-bug"),
])
def test_a_runner_that_raises_fails_its_own_streams_with_one_line(raised, expected):
    def run(models, assignments, ctx):
        ctx.emit("cam1", 0, b"{}")
        raise raised

    worker = EngineWorker(None, run)
    worker.start([_assign("cam1"), _assign("cam2")])
    results, ended = _drain_all(worker, {"cam1", "cam2"})
    assert [r.frame for r in results] == [0]
    assert all(e.error.startswith(expected) for e in ended)


def test_the_line_writer_writes_whole_lines_and_only_once_there_is_one(tmp_path):
    path = tmp_path / "cam1.jsonl"
    writer = JsonlLineWriter(path)
    assert not path.exists()  # nothing is created before the first result
    writer.write_line(b'{"frame":0}')
    writer.write_line(b'{"frame":1}\n')
    writer.close()
    assert path.read_bytes() == b'{"frame":0}\n{"frame":1}\n'
    assert isinstance(writer, LineSink) and isinstance(MqttPublisher(MqttConfig(url="mqtt://x")).sink("c"), LineSink)


def test_a_failed_line_write_is_cut_back_to_the_last_whole_line(tmp_path):
    path = tmp_path / "cam1.jsonl"
    writer = JsonlLineWriter(path)
    writer.write_line(b'{"frame":0}')

    class HalfThenFull:
        def __init__(self, real):
            self.real = real

        def write(self, data):
            self.real.write(bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

        def fileno(self):
            return self.real.fileno()

    real = writer._file
    writer._file = HalfThenFull(real)
    with pytest.raises(SinkError, match="No space left on device"):
        writer.write_line(b'{"frame":1,"instances":[]}')
    writer._file = real
    writer.close()
    assert path.read_bytes() == b'{"frame":0}\n'


@pytest.mark.parametrize(("path", "message"), [
    pytest.param("missing-dir/cam1.jsonl", "does not exist", id="missing-directory"),
    pytest.param(".", "it is a directory", id="a-directory"),
])
def test_a_bad_output_path_fails_before_anything_runs(tmp_path, path, message):
    with pytest.raises(SinkError, match=message):
        JsonlLineWriter(tmp_path / path)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where Ray is not installed
    with pytest.raises(ConfigError, match=r"--ray needs Ray, which is not installed.*pip install 'streamseg\[ray\]'"):
        require_ray()


_LISTENERS: list[socket.socket] = []  # kept open for the test's length


def _silent_listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()  # accepts (the kernel completes the handshake) and never says a word
    _LISTENERS.append(s)
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("address", "message"), [
    pytest.param(lambda: f"127.0.0.1:{_free_port()}", "nothing listens there", id="refused"),
    pytest.param(lambda: f"127.0.0.1:{_silent_listener().getsockname()[1]}", "does not answer as a Ray cluster",
                 id="silent-listener"),
    pytest.param(lambda: "ray-head", "is not HOST:PORT", id="no-port"),
    pytest.param(lambda: "ray://127.0.0.1:notaport", "is not HOST:PORT", id="bad-port"),
])
def test_a_ray_address_that_does_not_answer_is_one_line_quickly(address, message):
    pytest.importorskip("ray", reason="the Ray extra is not installed")
    assert not sys.modules["ray"].is_initialized()
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message) as error:
        connect(address(), timeout_s=2.0)
    assert time.monotonic() - started < 5.0
    assert "\n" not in str(error.value)
    while _LISTENERS:
        _LISTENERS.pop().close()


def test_auto_checks_the_cluster_it_would_join_before_joining(monkeypatch):
    """``--ray auto`` with RAY_ADDRESS left pointing at a cluster that is gone: Ray itself would retry
    for minutes; the check answers in one line."""
    pytest.importorskip("ray", reason="the Ray extra is not installed")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at .*: nothing listens there"):
        connect("auto", timeout_s=2.0)
    assert time.monotonic() - started < 5.0
