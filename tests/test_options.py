"""Run options from one dataclass: flags, the TOML config file, ``streamseg config`` and their errors."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.options import RunOptions, flag_of, key_of, read_config, to_toml, user_fields
from tests.test_cli import ROOT, _user_error, streamseg

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def as_flags(options: RunOptions) -> list[str]:
    """The command-line flags that give ``options``."""
    args = [options.source] if options.source else []
    for f in user_fields():
        value = getattr(options, f.name)
        if f.name == "source" or value is None or value == f.default:
            continue
        if f.name == "live":
            args.append("--live" if value else "--no-live")
        elif isinstance(value, bool):
            args.append(flag_of(f))
        elif f.name == "prompts":
            for obj_id, box in value:
                args += [flag_of(f), f"{obj_id}:{','.join(map(str, box))}"]
        else:
            args += [flag_of(f), str(value)]
    return args


def _comparable(jsonl: Path) -> list[dict]:
    """A JSONL's lines without the wall-clock fields."""
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for record in records:
        for key in ("capture_time", "times_ms", "age_ms"):
            record.pop(key)
    return records


def test_a_run_from_the_example_config_writes_what_the_same_options_as_flags_write(tmp_path):
    example = ROOT / "examples" / "synthetic.toml"
    options = RunOptions(**read_config(example))
    by_file = streamseg("run", "--config", str(example), "--jsonl", str(tmp_path / "file.jsonl"), "--quiet")
    assert by_file.returncode == 0, by_file.stderr
    flags = _without_jsonl(as_flags(options))  # the file's jsonl path is relative: both runs write to tmp
    by_flags = streamseg("run", *flags, "--jsonl", str(tmp_path / "flags.jsonl"), "--quiet")
    assert by_flags.returncode == 0, by_flags.stderr
    records = _comparable(tmp_path / "file.jsonl")
    assert len(records) == options.max_frames and sum(len(r["instances"]) for r in records) > 0
    assert records == _comparable(tmp_path / "flags.jsonl")


def _without_jsonl(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--jsonl":
            skip = True
        else:
            out.append(a)
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_streamseg_config_prints_toml_that_loads_back_to_the_same_options(example, tmp_path):
    first = streamseg("config", "--config", str(example), "--conf", "0.3", "--prompt", "7:1,2,30.5,40",
                      "--detector", "none", "--tracker", "sam2.1_hiera_s")
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "effective.toml"
    saved.write_text(first.stdout)
    again = streamseg("config", "--config", str(saved))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    options = RunOptions(**read_config(saved))
    assert options == RunOptions(**{**read_config(example), "conf": 0.3, "detector": "none",
                                    "tracker": "sam2.1_hiera_s", "prompts": ((7, (1.0, 2.0, 30.5, 40.0)),)})


def test_flags_override_the_file_and_the_file_overrides_the_defaults(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[detector]\nconf = 0.3\niou = 0.5\n')
    proc = streamseg("config", "--config", str(config), "--iou", "0.6")
    effective = RunOptions(**read_config(_saved(tmp_path, proc.stdout)))
    assert (effective.conf, effective.iou, effective.imgsz) == (0.3, 0.6, 640)


def _saved(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "saved.toml"
    path.write_text(text)
    return path


BAD_FILES = [
    # (file text, what the one error line names)
    ("[detector]\nconf = 3\n", ["[detector] conf = 3", "a number >= 0 and <= 1"]),  # out of range
    ("[detector]\nimgsz = \"big\"\n", ["[detector] imgsz", "an integer"]),  # wrong type
    ("[detector]\nbackend = \"tflite\"\n", ["[detector] backend", "auto, torch, onnxruntime, onnxruntime-int8, tensorrt"]),
    ("[outputs]\npreview = \"yes\"\n", ["[outputs] preview", "true or false"]),
    ("[detector]\nconfidence = 0.3\n", ["unknown key [detector] confidence", "conf, iou"]),  # misspelt key
    ("[decoder]\nbuffer = 2\n", ["unknown section [decoder]", "[source]"]),  # no such section
    ("max_frames = 0\n", ["max_frames = 0", "an integer >= 1"]),  # top-level key
    ("[tracker]\nprompts = [\"1:5,5\"]\n", ["[tracker] prompts", "ID:X1,Y1,X2,Y2"]),
    ("[source]\nuri = \n", ["not valid TOML"]),  # syntax
    ("[[streams]]\nuri = \"a.mp4\"\n", ["[[streams]]", "one stream"]),  # a server's config
]


@pytest.mark.parametrize("text, needles", BAD_FILES,
                         ids=["range", "type", "choice", "bool", "unknown_key", "unknown_section", "top_level",
                              "prompt", "syntax", "streams"])
def test_a_bad_config_file_is_one_line_naming_the_file_the_key_and_the_allowed_values(tmp_path, text, needles):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    _user_error(streamseg("run", "--config", str(config), "synthetic:frames=2"), str(config), *needles)
    with pytest.raises(ConfigError):  # the same from the API
        read_config(config)


def test_a_missing_config_file_and_a_missing_source_are_named():
    _user_error(streamseg("run", "--config", "no/such.toml"), "no/such.toml", "no such config file")
    _user_error(streamseg("run", "--detector", "none"), "no source")


def test_every_option_has_one_flag_and_one_key_and_each_source_option_reaches_open_source():
    from engine.sources import open_source

    flags = [flag_of(f) for f in user_fields()]
    places = [(f.metadata["section"], key_of(f)) for f in user_fields()]
    assert len(set(flags)) == len(flags) and len(set(places)) == len(places)
    accepted = inspect.signature(open_source).parameters
    fed = RunOptions(source="x").params("source")
    assert fed and set(fed) <= set(accepted)
    assert all(f.metadata["param"] for f in user_fields() if f.metadata["section"] == "source"
               and f.name != "source")  # a new source option is one field: it cannot be forgotten in app


def test_to_toml_marks_unset_options_and_quotes_paths_safely():
    text = to_toml(RunOptions(source='clip "one".mp4'))
    assert 'uri = "clip \\"one\\".mp4"' in text and "# max_frames: not set" in text
