"""The preview's prompt API on a running pipeline: prompts in, track ids out, refusals as one-line 4xx
answers while the stream goes on, and the token that writes need beyond loopback.

The pipeline is real (source thread, processor, sink thread); the tracker is a mask double (a point
prompt gives a 3-pixel square around each foreground point), so each test takes about a second."""

from __future__ import annotations

import http.client
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.errors import SinkError
from engine.fuse import TracksOnly
from engine.pipeline import Pipeline
from engine.prompts import PromptQueue
from engine.sinks import JsonlWriter, PreviewServer
from engine.sources.synthetic import SyntheticScene, SyntheticSource
from tests.doubles import MaskTracker

H, W = 120, 160
TOKEN = "s3cret-token-0123456789"


@contextmanager
def running(tmp_path: Path, **preview_options):
    """A live synthetic stream (30 fps for at most 30 s) through a pipeline with a preview; yields
    (preview, jsonl path, tracker) while it runs, and stops it on exit."""
    scene = SyntheticScene(seed=1, frames=900, width=W, height=H, objects=2, fps=30)
    queue = PromptQueue()
    tracker = MaskTracker(H, W)
    preview = PreviewServer(port=0, max_fps=None, prompts=queue, **preview_options)
    jsonl = tmp_path / "r.jsonl"
    pipeline = Pipeline(SyntheticSource(scene, live=True, realtime=True), tracker=tracker, fuser=TracksOnly(),
                        sinks=[preview, JsonlWriter(jsonl)], prompts=queue)
    stop = threading.Event()

    def run():
        for _ in pipeline:
            if stop.is_set():
                break

    thread = threading.Thread(target=run, name="pipeline")
    thread.start()
    try:
        assert _wait(lambda: preview.api.book.frame is not None), "the pipeline delivered no frame"
        yield preview, jsonl, tracker
    finally:
        stop.set()
        thread.join(timeout=10)


def _wait(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def call(preview: PreviewServer, method: str, path: str, body: bytes | dict | None = None, *,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of one request to the preview."""
    host, port = preview._server.server_address[:2]
    conn = http.client.HTTPConnection("127.0.0.1" if host == "0.0.0.0" else host, port, timeout=15)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers={**sent, **(headers or {})})
    answer = conn.getresponse()
    text = answer.read()
    conn.close()
    return answer.status, json.loads(text) if text else {}


def _records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def test_a_point_prompt_answers_with_the_new_id_and_the_following_frames_track_it(tmp_path):
    with running(tmp_path) as (preview, jsonl, _):
        status, answer = call(preview, "POST", "/prompts", {"points": [[80, 60]], "labels": [1]})
        assert status == 202 and answer["id"] == 1
        status, listed = call(preview, "GET", "/tracks")
        assert status == 200 and listed["width"] == W and listed["height"] == H
        assert [(t["id"], t["origin"]) for t in listed["tracks"]] == [(1, "user")]
        assert _wait(lambda: any(i["id"] == 1 for r in _records(jsonl)[-3:] for i in r["instances"]))
    records = _records(jsonl)
    prompted = next(r for r in records if r["decisions"])
    assert prompted["decisions"] == [{"decision": "prompt", "id": 1, "origin": "user", "points": [[80.0, 60.0]],
                                      "labels": [1], "box": None}]
    later = [r for r in records if r["frame"] >= prompted["frame"]]
    assert all(any(i["id"] == 1 for i in r["instances"]) for r in later)  # from that frame on, every frame


def test_a_refinement_and_a_removal_go_to_the_selected_track(tmp_path):
    with running(tmp_path) as (preview, jsonl, tracker):
        _, first = call(preview, "POST", "/prompts", {"points": [[40, 40]]})  # labels left out: foreground
        status, refined = call(preview, "POST", "/prompts", {"id": first["id"], "points": [[41, 41], [42, 42]],
                                                              "labels": [1, 0]})
        assert status == 202 and refined["id"] == first["id"] == 1
        status, removed = call(preview, "DELETE", "/tracks/1")
        assert (status, removed) == (200, {"id": 1})
        assert call(preview, "GET", "/tracks")[1]["tracks"] == []
        assert tracker.removed == [1]
        end = preview.api.book.frame
        assert _wait(lambda: _records(jsonl)[-1]["frame"] > end + 2)
    decisions = [d for r in _records(jsonl) for d in r["decisions"]]
    assert [(d["decision"], d["id"]) for d in decisions] == [("prompt", 1), ("prompt", 1), ("retire", 1)]
    assert decisions[-1]["reason"] == "user"
    # From the frame the removal was applied on: the preview's own frame count may trail the processor by
    # the sink queue, so it cannot say which frames came after the removal.
    removed_on = next(r["frame"] for r in _records(jsonl) if any(d["decision"] == "retire" for d in r["decisions"]))
    after = [r for r in _records(jsonl) if r["frame"] >= removed_on]
    assert after and not any(i["id"] == 1 for r in after for i in r["instances"])


BAD_REQUESTS = [
    # (method, path, body, extra headers, status, words of the reason)
    ("POST", "/prompts", b'{"points": [[1, 2]', {}, 400, "not JSON"),  # cut short
    ("POST", "/prompts", b"[[1, 2]]", {}, 400, "JSON object"),
    ("POST", "/prompts", {"pointz": [[1, 2]]}, {}, 400, "unknown key(s) pointz"),
    ("POST", "/prompts", {}, {}, 400, "give a box"),  # neither points nor a box
    ("POST", "/prompts", b'{"points": [[NaN, 3]]}', {}, 400, "finite"),
    ("POST", "/prompts", b'{"points": [[3, Infinity]]}', {}, 400, "finite"),
    ("POST", "/prompts", {"points": [[1, "2"]]}, {}, 400, "number pairs"),
    ("POST", "/prompts", {"points": [[1, 2]], "labels": [1, 0]}, {}, 400, "one label each"),
    ("POST", "/prompts", {"points": [[1, 2]], "labels": [2]}, {}, 400, "1 (foreground) or 0"),
    ("POST", "/prompts", {"box": [1, 2, 3]}, {}, 400, "box must be"),
    ("POST", "/prompts", {"points": [[1, 2]], "id": True}, {}, 400, "id must be an integer"),
    ("POST", "/prompts", {"points": [[W + 5, 60]]}, {}, 422, f"outside the {W}x{H} frame"),
    ("POST", "/prompts", {"points": [[-1, 60]]}, {}, 422, "outside"),
    ("POST", "/prompts", {"box": [10, 10, 20, H + 1]}, {}, 422, "outside"),
    ("POST", "/prompts", {"points": [[5, 5]], "frame": 10**9}, {}, 422, "not been shown yet"),
    ("POST", "/prompts", {"points": [[5, 5]], "id": 99}, {}, 404, "cannot refine object 99"),
    ("DELETE", "/tracks/99", None, {}, 404, "cannot remove object 99"),
    ("DELETE", "/tracks/abc", None, {}, 400, "positive integer"),
    ("POST", "/prompts", b'{"points": [[1, 2]]}', {"Content-Type": "text/plain"}, 415, "application/json"),
    ("POST", "/elsewhere", {"points": [[1, 2]]}, {}, 404, "POST /prompts"),
    ("POST", "/prompts", {"points": [[1, 2]]}, {"Host": "attacker.example"}, 403, "not this machine"),
]
BAD_IDS = ["truncated_json", "not_an_object", "unknown_key", "empty", "nan", "infinity", "string_coordinate",
           "labels_count", "label_2", "short_box", "id_bool", "point_right_of_frame", "point_negative",
           "box_below_frame", "future_frame", "unknown_id_refined", "unknown_id_removed", "id_not_a_number",
           "wrong_content_type", "unknown_path", "foreign_host"]


def test_bad_requests_get_a_4xx_with_one_line_and_the_stream_goes_on(tmp_path):
    """One running pipeline for the whole table: each refusal leaves it running and untouched."""
    with running(tmp_path) as (preview, _, tracker):
        for case, (method, path, body, headers, status, words) in zip(BAD_IDS, BAD_REQUESTS):
            got, answer = call(preview, method, path, body, headers=headers)
            assert (got, words in answer.get("error", "")) == (status, True), (case, answer)
            assert "\n" not in answer["error"], case
        before = preview.api.book.frame
        assert _wait(lambda: preview.api.book.frame > before + 3), "the stream stopped"
        assert tracker.masks == {} and tracker.prompts == []  # nothing was applied


def test_beyond_loopback_the_preview_needs_a_token_and_writes_must_carry_it(tmp_path, monkeypatch):
    with pytest.raises(SinkError, match="give a token"):
        PreviewServer(host="0.0.0.0", port=0)
    compared = []
    import engine.sinks.prompt_api as api_module

    real = api_module.hmac.compare_digest
    monkeypatch.setattr(api_module.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    with running(tmp_path, host="0.0.0.0", token=TOKEN) as (preview, _, _):
        prompt = {"points": [[80, 60]]}
        status, answer = call(preview, "POST", "/prompts", prompt)
        assert status == 401 and "token" in answer["error"]
        assert call(preview, "POST", "/prompts", prompt, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(preview, "DELETE", "/tracks/1", headers={"Authorization": "Basic " + TOKEN})[0] == 401
        assert call(preview, "GET", "/tracks")[0] == 200  # reading needs no token
        status, answer = call(preview, "POST", "/prompts", prompt, headers={"Authorization": f"Bearer {TOKEN}"})
        assert (status, answer["id"]) == (202, 1)
    assert len(compared) >= 2  # the tokens were compared in constant time


def test_a_prompt_the_pipeline_never_applies_is_withdrawn_with_503():
    queue = PromptQueue()
    preview = PreviewServer(port=0, prompts=queue, apply_timeout_s=0.3)
    try:
        status, answer = call(preview, "POST", "/prompts", {"points": [[1, 1]]})
        assert status == 503 and "is the stream still running" in answer["error"]
        ((_, future),) = queue.drain()
        assert future.cancelled()  # the processor skips it (tests/test_processor.py)
    finally:
        preview.close()


def test_a_preview_without_a_tracker_refuses_prompts_with_409():
    preview = PreviewServer(port=0)
    try:
        status, answer = call(preview, "POST", "/prompts", {"points": [[1, 1]]})
        assert status == 409 and "no tracker" in answer["error"]
    finally:
        preview.close()


# (token file text or None, $STREAMSEG_PREVIEW_TOKEN or None, the token, or the error's words)
TOKENS = [
    (None, None, None),  # neither: no token (the preview stays on loopback)
    (f"  {TOKEN}\n", None, TOKEN),  # the file wins, stripped
    (f"{TOKEN}\n", "another-token-abcdefgh", TOKEN),
    (None, f"{TOKEN} ", TOKEN),
    ("short\n", None, "has 5 characters"),
    (None, "", "has 0 characters"),
]


@pytest.mark.parametrize("text, variable, expected", TOKENS,
                         ids=["none", "file", "file_over_variable", "variable", "short_file", "empty_variable"])
def test_the_preview_token_comes_from_its_file_or_the_environment(text, variable, expected, tmp_path, monkeypatch):
    from engine.app import TOKEN_VARIABLE, preview_token
    from engine.errors import ConfigError
    from engine.options import RunOptions

    path = None
    if text is not None:
        path = tmp_path / "token.txt"
        path.write_text(text)
    if variable is None:
        monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(TOKEN_VARIABLE, variable)
    options = RunOptions(source="a.mp4", preview=True, preview_token_file=path)
    if expected in (None, TOKEN):
        assert preview_token(options) == expected
    else:
        with pytest.raises(ConfigError, match=expected):
            preview_token(options)


def test_a_track_clicked_in_the_preview_outlives_the_detector_driven_retirement(tmp_path):
    """The detector never sees the user's object and the tracker loses it at once: a detector's track
    would be retired after 2 frames; the user's stays, listed as the user's, until the user removes it."""
    from engine.fuse import Fuser, FuserConfig
    from tests.doubles import ArraySource, SquareDetector, moving_square_frames

    queue = PromptQueue()
    tracker = MaskTracker(96, 128)
    preview = PreviewServer(port=0, max_fps=None, prompts=queue)
    fuser = Fuser(FuserConfig(spawn_after=1, retire_after=2, retire_unmatched_after=2), names=SquareDetector.names)
    pipeline = Pipeline(ArraySource(moving_square_frames(12)), detector=SquareDetector(), tracker=tracker,
                        fuser=fuser, sinks=[preview], prompts=queue)
    answers = []
    clicking = threading.Thread(target=lambda: answers.append(call(preview, "POST", "/prompts",
                                                                   {"points": [[100, 80]]})))
    clicking.start()
    assert _wait(lambda: len(queue) == 1)  # waiting for the pipeline to apply it
    results = []
    for result in pipeline:
        tracker.hidden.add(1)  # the user's object (the stream's first) is lost from sight after the click
        results.append(result)
    clicking.join(timeout=5)
    (status, answer), = answers
    assert status == 202 and answer["id"] == 1
    user_id = 1
    retired = [d for r in results for d in r.decisions if type(d).__name__ == "Retire"]
    assert all(d.obj_id != user_id for d in retired)
    listed = {t["id"]: t for t in preview.api.tracks()["tracks"]}  # what GET /tracks said last
    assert listed[user_id]["origin"] == "user" and not listed[user_id]["visible"]
    assert any(t["origin"] == "detector" for t in listed.values())  # the square's track, for contrast


def _late_result(index: int, ids: list[int], decisions: tuple = ()):
    import torch

    from engine.types import Frame, FrameResult, Instances, StageTimes

    n = len(ids)
    masks = torch.zeros((n, 8, 8), dtype=torch.bool)
    inst = Instances(ids=torch.tensor(ids, dtype=torch.int64), class_ids=torch.zeros(n, dtype=torch.int64),
                     scores=torch.ones(n), boxes=torch.tensor([[1.0, 1.0, 4.0, 4.0]] * n).reshape(n, 4), masks=masks,
                     labels=("thing",) * n)
    frame = Frame(image=torch.zeros((8, 8, 3), dtype=torch.uint8), index=index, pts=None, capture_time=0.0)
    return FrameResult(frame=frame, instances=inst, times=StageTimes(), age_ms=0.0, decisions=decisions)


def test_a_removed_track_is_not_listed_again_by_results_that_arrive_after_its_removal():
    # The sinks get a frame's result after the pipeline has gone on: a removal can be applied (and
    # answered) before the results of the frames that still showed the track reach the book.
    from engine.sinks.prompt_api import TrackBook
    from engine.types import Retire, RetireReason, UserPrompt

    book = TrackBook()
    book.started(1)
    book.ended(1)
    book.update(_late_result(4, [1], (UserPrompt(obj_id=1, points=((2.0, 2.0),), labels=(1,)),)))
    book.update(_late_result(5, [1]))  # no decisions: the detector-alone rule must not bring it back
    assert book.snapshot()["tracks"] == []
    book.update(_late_result(6, [], (Retire(1, RetireReason.USER),)))  # the removal's own frame
    book.started(2)
    assert [t["id"] for t in book.snapshot()["tracks"]] == [2]
