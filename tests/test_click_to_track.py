"""Click-to-track as a user does it: ``streamseg run CLIP --detector none --preview`` (built by the app
from run options), headless Chromium on the preview page, a click on the picture, a shift-click, Escape and a drag, a
track chosen in the list and the Delete key; the JSONL the run writes shows what each did.

SAM 2 runs on random weights at a small size (masks mean nothing, but SAM 2 still decodes each prompt
into a mask around the point it was given); the clip plays at its own frame rate."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from engine.app import build_pipeline
from engine.options import RunOptions
from engine.sinks import PreviewServer

pytestmark = pytest.mark.skipif(os.environ.get("STREAMSEG_SKIP_BROWSER") == "1", reason="STREAMSEG_SKIP_BROWSER=1")
TRACKER_SIZE = 128  # the cheapest size SAM 2's random weights still give a point's mask at (~0.2 s a frame)


def _browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, ("Chromium is needed for this test: apt-get install chromium "
                                      "chromium-driver (scripts/install.sh --test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    options.page_load_strategy = "eager"  # an MJPEG <img> never finishes loading
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    browser.set_page_load_timeout(15)
    return browser


def _wait(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _click_when_still_there(browser, selector: str) -> bool:
    """Click an element of the track list; False when the page re-rendered the list between finding the
    element and clicking it (the list is rebuilt as tracks change), so ``_wait`` tries again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, selector).click()
    except (StaleElementReferenceException, NoSuchElementException):
        return False
    return True


def _records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []


def _mask(instance: dict) -> np.ndarray:
    m = instance["mask"]
    return mask_util.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool)


def _instance(record: dict, obj_id: int) -> dict | None:
    return next((i for i in record["instances"] if i["id"] == obj_id), None)


def _decided(jsonl: Path, kind: str, obj_id: int, **fields) -> dict | None:
    """The first record with a decision of ``kind`` about ``obj_id`` (with ``fields``), or None."""
    for record in _records(jsonl):
        for d in record["decisions"]:
            if d["decision"] == kind and d["id"] == obj_id and all(d.get(k) == v for k, v in fields.items()):
                return record
    return None


class _Page:
    """The preview page in Chromium, with clicks placed in frame pixels."""

    def __init__(self, browser) -> None:
        from selenium.webdriver.common.by import By

        self.browser = browser
        self.img = browser.find_element(By.ID, "stream")

    def to_offset(self, x: float, y: float) -> tuple[int, int]:
        """Selenium's offset from the picture's centre for frame pixel (x, y)."""
        rect = self.browser.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                           "return [r.width, r.height, arguments[0].naturalWidth, "
                                           "arguments[0].naturalHeight]", self.img)
        width, height, natural_w, natural_h = rect
        return round(x * width / natural_w - width / 2), round(y * height / natural_h - height / 2)

    def click(self, x: float, y: float, *, shift: bool = False) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        dx, dy = self.to_offset(x, y)
        chain = ActionChains(self.browser)
        if shift:
            chain = chain.key_down(Keys.SHIFT)
        chain = chain.move_to_element_with_offset(self.img, dx, dy).click()
        if shift:
            chain = chain.key_up(Keys.SHIFT)
        chain.perform()

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        (x0, y0), (x1, y1) = self.to_offset(*start), self.to_offset(*end)
        ActionChains(self.browser).move_to_element_with_offset(self.img, x0, y0).click_and_hold() \
            .move_by_offset((x1 - x0) // 2, (y1 - y0) // 2).move_to_element_with_offset(self.img, x1, y1) \
            .release().perform()

    def press(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.browser).send_keys(key).perform()

    def selected(self) -> int | None:
        found = self.browser.execute_script("const e = document.querySelector('#tracks li.selected'); "
                                            "return e ? Number(e.dataset.id) : null")
        return found

    def message(self) -> str:
        return self.browser.execute_script("return document.getElementById('message').textContent")


def test_a_click_tracks_the_object_a_shift_click_refines_it_a_drag_adds_a_box_and_delete_ends_it(tmp_path, bedroom_clip):
    jsonl = tmp_path / "run.jsonl"
    options = RunOptions(source=str(bedroom_clip), realtime=True, detector="none", tracker_weights="random",
                         tracker_size=TRACKER_SIZE, tracker_encoder="torch", device="cpu", preview=True,
                         preview_port=0, jsonl=jsonl)
    built = build_pipeline(options)  # loads SAM 2; the preview is serving already
    pipeline = built.pipeline
    preview = next(s for s in pipeline.stream.sinks if isinstance(s, PreviewServer))
    stop = threading.Event()
    failure: list[BaseException] = []

    def run():
        try:
            for _ in pipeline:
                if stop.is_set():
                    break
        except BaseException as exc:  # reported by the test, not lost on the thread
            failure.append(exc)

    from selenium.webdriver.common.keys import Keys

    browser = _browser()
    thread = threading.Thread(target=run, name="pipeline")
    try:
        browser.get(preview.url)
        thread.start()
        page = _Page(browser)
        _wait(lambda: browser.execute_script("return document.getElementById('stream').naturalWidth") == 960,
              what="the picture")
        assert _records(jsonl) and all(not r["instances"] for r in _records(jsonl))  # nothing tracked yet

        # A click: a new user track whose mask, on the frame the prompt was applied, covers the point.
        page.click(300, 200)
        obj_id = _wait(page.selected, what=f"a selected track (page says {page.message()!r})")
        prompted = _wait(lambda: _decided(jsonl, "prompt", obj_id), what="the prompt in the JSONL")
        (decision,) = [d for d in prompted["decisions"] if d["decision"] == "prompt"]
        (x, y), = decision["points"]
        assert abs(x - 300) <= 2 and abs(y - 200) <= 2 and decision["labels"] == [1]  # frame pixels
        first = _instance(prompted, obj_id)
        assert first is not None and _mask(first)[round(y), round(x)], "the new track's mask misses the click"
        _wait(lambda: any(r["frame"] > prompted["frame"] + 2 for r in _records(jsonl)), what="frames after it")
        after = [r for r in _records(jsonl) if r["frame"] >= prompted["frame"]]
        assert all(_instance(r, obj_id) is not None for r in after), "the track did not last"
        shot = tmp_path / "click-to-track.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # A shift-click outside the mask: a background point for the same track, which keeps its id.
        latest = _mask(_instance(_records(jsonl)[-1], obj_id))
        outside = np.argwhere(~latest)
        assert len(outside), "the mask covers the whole frame: no place to shift-click outside it"
        oy, ox = outside[np.argmax(np.hypot(outside[:, 0] - y, outside[:, 1] - x))]  # far from the click
        page.click(int(ox), int(oy), shift=True)
        refined = _wait(lambda: _decided(jsonl, "prompt", obj_id, labels=[0]), what="the background point")
        shrunk = _instance(refined, obj_id)
        assert shrunk is not None and page.selected() == obj_id
        assert not _mask(shrunk)[oy, ox] or _mask(shrunk).sum() <= latest.sum()  # shrunk, or kept out of it

        # Escape, then a drag: a new track from the box drawn; the first one goes on.
        page.press(Keys.ESCAPE)
        assert page.selected() is None
        page.drag((600, 150), (800, 400))
        boxed = _wait(lambda: page.selected() not in (None, obj_id) and page.selected(),
                      what=f"a track from the box (page says {page.message()!r})")
        record = _wait(lambda: _decided(jsonl, "prompt", boxed), what="the box prompt")
        (decision,) = [d for d in record["decisions"] if d["decision"] == "prompt"]
        assert decision["points"] == [] and np.allclose(decision["box"], [600, 150, 800, 400], atol=3)
        assert _instance(record, obj_id) is not None and _instance(record, boxed) is not None

        # The first track chosen in the list, then Delete: it ends; the frames after it do not have it.
        _wait(lambda: _click_when_still_there(browser, f"#tracks li[data-id='{obj_id}']"),
              what=f"track {obj_id} in the list to take a click")
        assert page.selected() == obj_id
        page.press(Keys.DELETE)
        removed = _wait(lambda: _decided(jsonl, "retire", obj_id, reason="user"), what="the removal")
        _wait(lambda: any(r["frame"] > removed["frame"] + 2 for r in _records(jsonl)), what="frames after it")
        assert not any(_instance(r, obj_id) for r in _records(jsonl) if r["frame"] >= removed["frame"])
        assert all(_instance(r, boxed) for r in _records(jsonl) if r["frame"] >= removed["frame"])
        assert page.selected() is None
        assert not failure, failure
    finally:
        stop.set()
        browser.quit()
        if thread.is_alive() or thread.ident is not None:
            thread.join(timeout=30)
        else:
            pipeline.stream.source.close()
            for sink in pipeline.stream.sinks:
                sink.close()
