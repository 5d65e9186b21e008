"""The ``serve`` config file: the issue's minimal file as written, the complete example, and every kind
of mistake as one line naming the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.fleet.config import is_loopback, parse_host_port, read_serve_config
from engine.options import RunOptions

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
weights = "random"          # run options at top level apply to every stream
tracker = "none"
[[streams]]
name = "cam1"
source = "synthetic:seed=1,frames=20,size=320x240"
jsonl = "out/cam1.jsonl"
[[streams]]
name = "cam2"
source = "rtsp://127.0.0.1:8554/cam2"
out = "out/cam2.mp4"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.toml"
    path.write_text(text)
    return path


def test_the_minimal_file_reads_as_written(tmp_path):
    config = read_serve_config(_write(tmp_path, MINIMAL))
    cam1, cam2 = config.streams
    assert (cam1.name, cam2.name) == ("cam1", "cam2")
    assert cam1.options == RunOptions(weights="random", tracker="none", source="synthetic:seed=1,frames=20,size=320x240",
                                      jsonl=Path("out/cam1.jsonl"))
    assert cam2.options.out == Path("out/cam2.mp4") and cam2.options.jsonl is None
    assert (config.control_host, config.control_port, config.metrics_port, config.ray) == ("127.0.0.1", 0, None, None)
    assert config.mqtt is None and cam1.budget_ms is None


def test_the_complete_example_reads_and_every_stream_overrides_what_it_sets():
    config = read_serve_config(ROOT / "examples" / "serve.toml")
    assert len(config.streams) >= 3 and config.mqtt is not None and config.metrics_port is not None
    by_name = {s.name: s for s in config.streams}
    assert len(by_name) == len(config.streams)
    assert any(s.budget_ms != config.budget_ms for s in config.streams)  # a stream's own budget
    assert any(not s.mqtt for s in config.streams)


def test_a_stream_s_own_options_override_the_top_level_ones_and_sections_work_too(tmp_path):
    config = read_serve_config(_write(tmp_path, """\
conf = 0.4
detect_every = 2
[detector]
imgsz = 320
[serve]
budget_ms = 150
[[streams]]
name = "a"
source = "synthetic:seed=1"
conf = 0.6
budget_ms = 50
[[streams]]
name = "b"
[streams.source]
uri = "synthetic:seed=2"
"""))
    a, b = config.streams
    assert (a.options.conf, a.options.detect_every, a.options.imgsz, a.budget_ms) == (0.6, 2, 320, 50.0)
    assert (b.options.conf, b.options.source, b.budget_ms) == (0.4, "synthetic:seed=2", 150.0)


BAD = [
    # (file text, what the one line names)
    pytest.param('confidence = 0.3\n[[streams]]\nname = "a"\nsource = "x.mp4"\n',
                 ["unknown key confidence", "conf"], id="unknown-top-level-key"),
    pytest.param('[serve]\nport = 80\n', ["[serve]: unknown key port", "control"], id="unknown-serve-key"),
    pytest.param('[serve]\nmetrics_port = 70000\n', ["metrics_port = 70000", "0..65535"], id="port-out-of-range"),
    pytest.param('[serve]\nmetrics_port = "9100"\n', ["metrics_port", "an integer"], id="port-wrong-type"),
    pytest.param('[serve]\ncontrol = "localhost"\n', ["[serve] control", "HOST:PORT"], id="control-without-port"),
    pytest.param('[serve]\nray = true\n', ["ray = True", '"auto"'], id="ray-true"),
    pytest.param('[serve]\nbudget_ms = -5\n', ["budget_ms = -5", "> 0"], id="negative-budget"),
    pytest.param('[serve.degrade]\ndown_after = 2\n', ["[serve.degrade]: unknown key down_after", "down_after_s"],
                 id="unknown-degrade-key"),
    pytest.param('[serve.degrade]\nover_fraction = 0.4\n', ["under_fraction < over_fraction"], id="degrade-band"),
    pytest.param('[serve.mqtt]\nhost = "x"\n', ["unknown key [serve.mqtt] host", "url"], id="unknown-mqtt-key"),
    pytest.param('[serve.mqtt]\nurl = "http://x"\n', ["[serve.mqtt]", "mqtt://HOST"], id="mqtt-bad-url"),
    pytest.param('[[streams]]\nsource = "x.mp4"\n', ["[[streams]] 1", "no name"], id="stream-without-name"),
    pytest.param('[[streams]]\nname = "a"\n', ["stream a", "no source"], id="stream-without-source"),
    pytest.param('[[streams]]\nname = "a b"\nsource = "x.mp4"\n', ["stream a b", "without spaces"], id="bad-name"),
    pytest.param('[[streams]]\nname = "a"\nsource = "x.mp4"\nimgsz = 0\n', ["stream a", "imgsz = 0", ">= 1"],
                 id="stream-option-out-of-range"),
    pytest.param('[[streams]]\nname = "a"\nsource = "x.mp4"\nmqtt = "yes"\n', ["stream a", "mqtt", "true or false"],
                 id="stream-mqtt-not-bool"),
    pytest.param('[[streams]]\nname = "a"\nsource = "x.mp4"\n[[streams]]\nname = "a"\nsource = "y.mp4"\n',
                 ["stream name 'a' appears twice", "[[streams]] 1 and 2", "unique"], id="duplicate-name"),
    pytest.param('[[streams]]\nname = "a"\nsource = "x.mp4"\nweights = "random"\n[streams.detector]\nweights = "w.pt"\n',
                 ["a second time"], id="option-set-twice"),
    pytest.param('streams = "cam1"\n', ["array of tables"], id="streams-not-tables"),
    pytest.param('[[streams]]\nname = "a"\nsource = \n', ["not valid TOML", "examples/serve.toml"], id="syntax"),
]


@pytest.mark.parametrize(("text", "needles"), BAD)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, needles):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        read_serve_config(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no/such.toml: no such config file"):
        read_serve_config("no/such.toml")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("127.0.0.1:8000", ("127.0.0.1", 8000), id="ipv4"),
    pytest.param("[::1]:0", ("::1", 0), id="ipv6"),
    pytest.param("0.0.0.0:9000", ("0.0.0.0", 9000), id="any"),
])
def test_host_port(text, expected):
    assert parse_host_port(text, where="x") == expected


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("10.0.0.5", False), ("camera-host", False),
])
def test_loopback_is_only_what_no_other_machine_reaches(host, loopback):
    assert is_loopback(host) is loopback
