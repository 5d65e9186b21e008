"""Nothing the tracker holds grows with the stream: after 1,000 frames it holds exactly the tensor bytes
it held after 100, and the process has not grown beyond allocator noise. Every bound (4 conditioning
frames, 7 memory frames, 16 pointers) is reached by frame 20, so 900 more frames repeat what any longer
stream does; the 30-minute soak (benchmarks.memory_soak) covers hours of process growth.

hiera_t's windowed attention pads every input below 224 px up to its 14x14-token windows, so its image
encoder costs about as much at 32 px as at 224 (~0.1-0.3 s a frame here): 1,000 frames would take
minutes. The encoder holds no state between frames, so this test computes its outputs once for 16 real
frames and feeds them in rotation; everything that keeps state (memory attention, decoder, memory
encoder, the memory bank) runs for real on every frame.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from engine.track import StreamingTracker, TrackerConfig

from .conftest import CONFIG, read_frames

TINY = 32  # the smallest image size hiera_t accepts (its deepest stage has stride 32)
REPROMPT_EVERY = 20  # a detector re-prompting object 1: conditioning frames hit the cap C=4 by frame 80
# RSS may move by a few MB as the allocator reuses freed blocks (measured: under 2 MB here). A real leak of
# one 32x32 RGB float image per frame would add 1,900 x 12 kB = 23 MB over the run; 8 MB sits between.
RSS_NOISE_BYTES = 8 * 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~25-50 ms a frame by CPU; several times that when shared
def test_memory_after_1000_frames_equals_memory_after_100(bedroom_clip):
    clip = read_frames(bedroom_clip, 50, TINY)
    frames = np.concatenate([clip, clip[::-1]])  # ping-pong so the picture keeps moving
    options = TrackerConfig(image_size=TINY, max_cond_frames=4)
    tracker = StreamingTracker.from_config(CONFIG, seed=0, options=options)
    model = tracker.model
    with torch.inference_mode():
        encoded = [model.forward_image(tracker._preprocess(f)[0]) for f in frames[:16]]
    rotation = itertools.cycle(encoded)
    model.forward_image = lambda image: {k: list(v) for k, v in next(rotation).items()}
    held = {}
    for index in range(1001):
        tracker.step(frames[index % len(frames)])
        if index in (100, 1000):
            held[index] = (tracker.memory_bytes(), _rss_bytes())
        if index == 0:
            tracker.add_object(1, box=[4, 4, 20, 28])
            tracker.add_object(2, box=[14, 2, 30, 20])
        elif index % REPROMPT_EVERY == 0:
            tracker.add_object(1, box=[5, 4, 21, 28])
    slot = tracker._slots[1]
    # after a step: the N-1 = 6 frames it attended to plus its own, and P-1 = 15 pointers plus its own
    assert len(slot.cond) == 4 and len(slot.recent_features) == 7 and len(slot.recent_ptrs) == 16
    assert held[1000][0] == held[100][0]
    assert held[1000][1] - held[100][1] < RSS_NOISE_BYTES
