"""The control API over real HTTP on 127.0.0.1, driving a single-process fleet of synthetic streams
(network doubles): list, add, remove, budget, drain; errors as status codes with one line; the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.fleet.config import read_serve_config
from engine.fleet.control import ControlServer, read_token
from engine.fleet.local import LocalFleet
from tests.fleet.serve_doubles import call, loader, wait_for

pytestmark = pytest.mark.timeout(90)

LIVE = "synthetic:seed={seed},frames=100000,size=64x48,objects=2,fps=30"


def _config(tmp_path: Path, streams: str, top: str = "") -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(f'realtime = true\n{top}\n{streams}')
    return path


def _stream(tmp_path: Path, name: str, seed: int, extra: str = "") -> str:
    return (f'[[streams]]\nname = "{name}"\nsource = "{LIVE.format(seed=seed)}"\n'
            f'jsonl = "{tmp_path / (name + ".jsonl")}"\n{extra}\n')


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends with a cut line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def served(tmp_path):
    loads: list = []
    config = read_serve_config(_config(tmp_path, _stream(tmp_path, "cam1", 1) + _stream(tmp_path, "cam2", 2)))
    fleet = LocalFleet(config, load=loader(loads=loads), on_event=lambda line: None)
    fleet.start()
    with ControlServer(fleet) as control:
        yield fleet, control.url, loads
        fleet.drain()
        assert fleet.wait(timeout_s=20), "the fleet did not drain"


def _views(url: str) -> dict[str, dict]:
    status, body = call(f"{url}/streams")
    assert status == 200
    return {s["name"]: s for s in body["streams"]}


def test_streams_are_listed_with_state_rate_drops_and_reconnects(served):
    fleet, url, loads = served
    views = wait_for(lambda: (v := _views(url)) and all(s["frames"] >= 10 for s in v.values()) and v,
                     what="ten results per stream")
    assert set(views) == {"cam1", "cam2"}
    for view in views.values():
        assert view["state"] == "running" and view["session"] == 0 and view["quality"] == 0
        assert 10 < view["fps"] < 60  # a 30 fps source, read at its own pace
        assert (view["dropped"], view["late"], view["reconnects"]) == (0, 0, 0)
    assert len(loads) == 1  # the two streams share one copy of the networks (one loop)
    status, one = call(f"{url}/streams/cam1")
    assert status == 200 and one["name"] == "cam1"


def test_a_stream_is_added_refused_twice_and_removed_whole(served, tmp_path):
    fleet, url, _ = served
    table = {"name": "cam3", "source": LIVE.format(seed=3), "jsonl": str(tmp_path / "cam3.jsonl")}
    status, view = call(f"{url}/streams", "POST", table)
    assert status == 201 and view["name"] == "cam3" and view["state"] == "running"
    wait_for(lambda: _views(url)["cam3"]["frames"] >= 5, what="cam3's first results")
    status, body = call(f"{url}/streams", "POST", table)
    assert status == 409 and "already running" in body["error"]

    status, view = call(f"{url}/streams/cam1", "DELETE")
    assert status == 200 and view["state"] == "removed"  # answered once its outputs are closed
    frames = [r["frame"] for r in _lines(tmp_path / "cam1.jsonl")]
    assert frames == list(range(len(frames))) and len(frames) == view["frames"]  # whole, in order
    status, view = call(f"{url}/streams", "POST", {**table, "name": "cam1",
                                                     "jsonl": str(tmp_path / "cam1-again.jsonl")})
    assert status == 201 and view["session"] == 1  # back under its old name: a new session


@pytest.mark.parametrize(("body", "status", "needles"), [
    pytest.param({"name": "x", "source": "synthetic:seed=1", "imgsz": 0}, 400, ["imgsz = 0", ">= 1"], id="out-of-range"),
    pytest.param({"name": "x", "source": "synthetic:seed=1", "confidence": 0.3}, 400, ["unknown key confidence"],
                 id="unknown-key"),
    pytest.param({"source": "synthetic:seed=1"}, 400, ["no name"], id="no-name"),
    pytest.param({"name": "x", "source": "/no/such/clip.mp4"}, 400, ["/no/such/clip.mp4"], id="source-cannot-open"),
    pytest.param({"name": "x", "source": "synthetic:seed=1", "jsonl": "/no/such/dir/x.jsonl"}, 400,
                 ["/no/such/dir", "does not exist"], id="output-cannot-be-written"),
    pytest.param({"name": "cam2", "source": "synthetic:seed=1"}, 409, ["cam2", "already running"], id="duplicate"),
])
def test_a_bad_stream_is_refused_with_one_line(served, body, status, needles):
    _, url, _ = served
    got, answer = call(f"{url}/streams", "POST", body)
    assert got == status, answer
    assert "\n" not in answer["error"]
    for needle in needles:
        assert needle in answer["error"], answer
    assert _views(url)["cam2"]["state"] == "running"  # the others go on


@pytest.mark.parametrize(("method", "path", "body", "raw", "status"), [
    pytest.param("DELETE", "/streams/nope", None, None, 404, id="remove-unknown"),
    pytest.param("PUT", "/streams/nope/budget", {"budget_ms": 50}, None, 404, id="budget-unknown"),
    pytest.param("PUT", "/streams/cam1/budget", {"budget_ms": -1}, None, 400, id="budget-negative"),
    pytest.param("PUT", "/streams/cam1/budget", {"budget": 50}, None, 400, id="budget-wrong-key"),
    pytest.param("POST", "/streams", None, b"{not json", 400, id="not-json"),
    pytest.param("POST", "/streams", None, b"[1, 2]", 400, id="not-an-object"),
    pytest.param("POST", "/streams", None, b"x" * (65 * 1024), 400, id="too-large"),
    pytest.param("PATCH", "/streams", None, None, 405, id="method"),
    pytest.param("GET", "/drain", None, None, 405, id="drain-is-post"),
    pytest.param("GET", "/nothing", None, None, 404, id="no-such-endpoint"),
])
def test_requests_that_cannot_be_served_say_why(served, method, path, body, raw, status):
    _, url, _ = served
    got, answer = call(f"{url}{path}", method, body, raw=raw)
    assert got == status and answer["error"], answer


def test_a_budget_is_set_and_cleared(served):
    _, url, _ = served
    status, view = call(f"{url}/streams/cam1/budget", "PUT", {"budget_ms": 80})
    assert status == 200 and view["budget_ms"] == 80.0
    status, view = call(f"{url}/streams/cam1/budget", "PUT", {"budget_ms": None})
    assert status == 200 and view["budget_ms"] is None


def test_drain_stops_every_stream_and_leaves_every_file_whole(served, tmp_path):
    fleet, url, _ = served
    wait_for(lambda: all(s["frames"] >= 5 for s in _views(url).values()), what="five results each")
    status, body = call(f"{url}/drain", "POST")
    assert status == 202 and body == {"draining": True}
    assert fleet.wait(timeout_s=20)
    for name in ("cam1", "cam2"):
        frames = [r["frame"] for r in _lines(tmp_path / f"{name}.jsonl")]
        assert frames == list(range(len(frames))) and len(frames) >= 5
    assert {v.state for v in fleet.views()} == {"ended"}
    status, body = call(f"{url}/streams", "POST", {"name": "late", "source": "synthetic:seed=1"})
    assert status == 409 and "draining" in body["error"]


def test_beyond_loopback_the_api_refuses_to_start_without_a_token(served):
    fleet, _, _ = served
    with pytest.raises(ConfigError, match="can be reached from other machines.*token_file"):
        ControlServer(fleet, host="0.0.0.0")


def test_with_a_token_every_request_needs_it(served, tmp_path):
    fleet, _, _ = served
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with ControlServer(fleet, token=read_token(token_file)) as control:
        assert call(f"{control.url}/streams")[0] == 401
        assert call(f"{control.url}/streams", token="wrong")[0] == 401
        assert call(f"{control.url}/drain", "POST", token="s3cret-tokenX")[0] == 401
        assert call(f"{control.url}/streams", token="s3cret-token")[0] == 200
    assert not fleet.draining  # the refused drain did nothing


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("", "must hold one token", id="empty"),
    pytest.param("two words", "must hold one token", id="spaces"),
])
def test_a_bad_token_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "token"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_token(path)
    with pytest.raises(ConfigError, match="cannot read the token file"):
        read_token(tmp_path / "missing")
