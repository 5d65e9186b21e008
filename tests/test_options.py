"""Run options from one dataclass: flags, the TOML config file, ``streamseg config`` and their errors."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.options import (RunOptions, flag_of, from_args, key_of, read_config, to_toml,
                            user_fields)
from engine.prompt_syntax import format_prompt
from engine.types import UserPrompt
from tests.test_cli import ROOT, _user_error, streamseg, streamseg_in_process

EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.toml") if p.name != "serve.toml")  # serve: tests/fleet


def as_flags(options: RunOptions) -> list[str]:
    """The command-line flags that give ``options``."""
    args = [options.source] if options.source else []
    for f in user_fields():
        value = getattr(options, f.name)
        if f.name == "source" or value is None or value == f.default:
            continue
        if isinstance(value, bool):
            args.append(flag_of(f) if value else "--no-" + flag_of(f)[2:])
        elif f.name == "prompts":
            for prompt in value:
                args += [flag_of(f), format_prompt(prompt)]
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
                      "--prompt", "7:point=9,12.5", "--prompt", "8:point=3,4,0", "--detector", "none",
                      "--tracker", "sam2.1_hiera_s")
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "effective.toml"
    saved.write_text(first.stdout)
    again = streamseg("config", "--config", str(saved))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    options = RunOptions(**read_config(saved))
    assert options == RunOptions(**{**read_config(example), "conf": 0.3, "detector": "none",
                                    "tracker": "sam2.1_hiera_s",
                                    "prompts": (UserPrompt(obj_id=7, box=(1.0, 2.0, 30.5, 40.0), points=((9.0, 12.5),),
                                                           labels=(1,)),
                                                UserPrompt(obj_id=8, points=((3.0, 4.0),), labels=(0,)))})


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
    ("[tracker]\nprompts = [\"1:5,5\"]\n", ["[tracker] prompts", "ID:X1,Y1,X2,Y2 or ID:point=X,Y"]),
    ("[source]\nuri = \n", ["not valid TOML"]),  # syntax
    ("[[streams]]\nuri = \"a.mp4\"\n", ["[[streams]]", "one stream"]),  # a server's config
    ("[segmenter]\nmodel = \"segformer\"\n", ["[segmenter] model", "none, deeplabv3plus, unet"]),
    ("[source]\nreconnect_interval = 0\n", ["[source] reconnect_interval = 0", "> 0"]),  # live-source policy
    ("[source]\ngive_up_after = -5\n", ["[source] give_up_after = -5", "> 0"]),
]


@pytest.mark.parametrize("text, needles", BAD_FILES,
                         ids=["range", "type", "choice", "bool", "unknown_key", "unknown_section", "top_level",
                              "prompt", "syntax", "streams", "segmenter", "reconnect_interval", "give_up_after"])
def test_a_bad_config_file_is_one_line_naming_the_file_the_key_and_the_allowed_values(tmp_path, text, needles):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    _user_error(streamseg_in_process("run", "--config", str(config), "synthetic:frames=2"), str(config), *needles)
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


def test_the_segmenter_choices_are_the_segment_packages_backends():
    from engine.options import SEGMENTERS
    from engine.segment import BACKENDS

    assert SEGMENTERS == ("none", *BACKENDS)


@pytest.mark.parametrize("args, needles", [
    (["--backend", "tflite"], ["--backend", "auto, torch, onnxruntime, onnxruntime-int8, tensorrt"]),
    (["--segmenter", "segformer"], ["--segmenter", "none, deeplabv3plus"]),
], ids=["backend", "segmenter"])
def test_a_bad_choice_on_the_command_line_is_the_same_one_line_as_in_a_file(args, needles):
    _user_error(streamseg("run", "synthetic:frames=2", *args), *needles)


def test_to_toml_marks_unset_options_and_quotes_paths_safely():
    text = to_toml(RunOptions(source='clip "one".mp4'))
    assert 'uri = "clip \\"one\\".mp4"' in text and "# max_frames: not set" in text


# (--prompt texts, the prompts they give): one per id, its points in order
PROMPTS = [
    (["1:10,20,200,240"], [UserPrompt(obj_id=1, box=(10.0, 20.0, 200.0, 240.0))]),
    (["1:box=10,20,200,240"], [UserPrompt(obj_id=1, box=(10.0, 20.0, 200.0, 240.0))]),
    (["2:point=120,80"], [UserPrompt(obj_id=2, points=((120.0, 80.0),), labels=(1,))]),
    (["2:point=120,80", "2:point=150,90,0"],
     [UserPrompt(obj_id=2, points=((120.0, 80.0), (150.0, 90.0)), labels=(1, 0))]),
    (["3:point=5,6;point=7,8,0;box=1,1,9,9"],
     [UserPrompt(obj_id=3, box=(1.0, 1.0, 9.0, 9.0), points=((5.0, 6.0), (7.0, 8.0)), labels=(1, 0))]),
    (["4:point=1,1", "5:1,1,3,3"], [UserPrompt(obj_id=4, points=((1.0, 1.0),), labels=(1,)),
                                    UserPrompt(obj_id=5, box=(1.0, 1.0, 3.0, 3.0))]),
]


@pytest.mark.parametrize("texts, expected", PROMPTS,
                         ids=["box", "box_named", "point", "points_joined", "one_text", "two_objects"])
def test_prompts_take_boxes_and_labelled_points_and_load_back_from_toml(texts, expected, tmp_path):
    options = RunOptions(source="a.mp4", prompts=tuple(texts))
    assert list(options.prompts) == expected
    assert RunOptions(**read_config(_saved(tmp_path, to_toml(options)))) == options


BAD_PROMPTS = [
    ("1:5,5", "is not ID:X1,Y1,X2,Y2"),  # two numbers are neither a box nor a point
    ("one:point=1,2", "is not"),  # the id is not a number
    ("0:point=1,2", "is not"),  # ids start at 1
    ("1:point=1,2,5", "is not"),  # a label is 1 or 0
    ("1:circle=1,2,3", "is not"),
    ("1:point=nan,2", "finite"),
    ("1:5,5,2,2", "x2>x1"),
]


@pytest.mark.parametrize("text, words", BAD_PROMPTS,
                         ids=["two_numbers", "id_word", "id_zero", "label_5", "unknown_kind", "nan", "box_swapped"])
def test_a_malformed_prompt_is_one_config_error_naming_it(text, words):
    with pytest.raises(ConfigError, match=words) as error:
        RunOptions(source="a.mp4", prompts=(text,))
    assert text in str(error.value) and "\n" not in str(error.value)


def test_two_boxes_for_one_object_are_refused():
    with pytest.raises(ConfigError, match="object 1 has two boxes"):
        RunOptions(source="a.mp4", prompts=("1:1,1,5,5", "1:box=2,2,6,6"))


# -- the live-source policy: flags and keys that reach the source ----------------------------------------

URL = "rtsp://127.0.0.1:9/cam"  # nothing connects: open_source builds the source and its policy only
POLICY = [
    # (flag, config key, value as typed, ReconnectPolicy field, value there)
    ("--reconnect-attempts", "reconnect_attempts", "3", "reconnect_attempts", 3),
    ("--reconnect-interval", "reconnect_interval", "0.25", "reconnect_interval_s", 0.25),
    ("--give-up-after", "give_up_after", "30", "give_up_s", 30.0),
    ("--give-up-after", "give_up_after", "inf", "give_up_s", float("inf")),  # never give up
    ("--io-timeout", "io_timeout", "2.5", "io_timeout_s", 2.5),
]


def _policy(options: RunOptions):
    from engine.sources import open_source

    return open_source(options.source, **options.params("source")).policy


@pytest.mark.parametrize("flag, key, text, attribute, expected", POLICY,
                         ids=["attempts", "interval", "give-up", "give-up-never", "io-timeout"])
def test_each_live_source_policy_option_reaches_the_source_from_its_flag_and_its_key(
        tmp_path, flag, key, text, attribute, expected):
    from engine.cli import _parser

    by_flag = from_args(_parser().parse_args(["run", URL, flag, text]))
    config = tmp_path / "live.toml"
    config.write_text(f'[source]\nuri = "{URL}"\n{key} = {text}\n')
    by_key = RunOptions(**read_config(config))
    assert getattr(_policy(by_flag), attribute) == expected
    assert getattr(_policy(by_key), attribute) == expected
    assert RunOptions(**read_config(_saved(tmp_path, to_toml(by_flag)))) == by_flag  # streamseg config


def test_by_default_a_lost_camera_is_retried_every_second_for_ten_minutes_with_no_attempt_limit():
    policy = _policy(RunOptions(source=URL))
    assert (policy.reconnect_attempts, policy.reconnect_interval_s, policy.give_up_s) == (None, 1.0, 600.0)


BAD_POLICY_FLAGS = [
    # (flags, what the one error line names)
    (["--reconnect-interval", "0"], ["--reconnect-interval", "0", "> 0 and <= 60"]),
    (["--reconnect-interval", "61"], ["--reconnect-interval", "out of range", "<= 60"]),
    (["--give-up-after", "0"], ["--give-up-after", "out of range", "inf (never)"]),
    (["--give-up-after", "nan"], ["--give-up-after", "must be finite"]),
    (["--give-up-after=-inf"], ["--give-up-after", "must be finite"]),
    (["--give-up-after", "soon"], ["--give-up-after", '"soon" is not a number']),
    (["--io-timeout", "abc"], ["--io-timeout", '"abc" is not a number', "> 0"]),
    (["--io-timeout", "inf"], ["--io-timeout", "must be finite"]),
    (["--reconnect-attempts", "-1"], ["--reconnect-attempts", ">= 0"]),
    (["--reconnect-attempts", "2.5"], ["--reconnect-attempts", '"2.5" is not an integer']),
]


@pytest.mark.parametrize("flags, needles", BAD_POLICY_FLAGS,
                         ids=["interval-zero", "interval-too-long", "give-up-zero", "give-up-nan",
                              "give-up-minus-inf", "give-up-text", "io-timeout-text", "io-timeout-inf",
                              "attempts-negative", "attempts-fraction"])
def test_a_bad_live_source_policy_value_is_one_line_naming_the_flag_and_the_allowed_values(capsys, flags, needles):
    from engine.cli import main

    assert main(["run", URL, *flags]) == 1  # before anything connects or loads
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamseg: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
