"""Damaged files: whatever can be decoded is delivered, in order, with strictly increasing pts; what was
lost is counted (``SourceStats``) and said (``loss_summary``); and an error names the real cause: a
file cut short is "truncated", a broken index or broken data inside a whole file is "damaged"."""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.errors import SourceError
from engine.sources import open_source
from tests.sources import media

DECLARED = 289  # 01_dog.mp4's frames; its index (moov) comes before its data


def _table(data: bytes, box: bytes) -> int:
    """The offset of the first entry of an mp4 sample table box (stco: offsets, stsz: sizes)."""
    at = data.find(box)
    return at + (12 if box == b"stco" else 16) + 4  # box type, version/flags, [sample size], count


def _far_offset(data: bytearray) -> None:
    at = _table(data, b"stco") + 4 * 144  # a chunk in the middle points 2 GiB away
    data[at:at + 4] = struct.pack(">I", 0x7FFFFFF0)


def _zero_sizes(data: bytearray) -> None:
    at = _table(data, b"stsz") + 4 * 100  # forty samples claim to hold no bytes
    data[at:at + 160] = bytes(160)


def _noise(data: bytearray) -> None:
    middle = len(data) // 2
    data[middle:middle + 65536] = np.random.default_rng(0).integers(0, 256, 65536, np.uint8).tobytes()


def _cut_inside_a_sample(data: bytearray) -> None:
    del data[len(data) // 2:]


def _cut_between_samples(data: bytearray) -> None:
    at = _table(bytes(data), b"stco") + 4 * 200  # the 201st chunk's first byte: the cut falls between
    del data[struct.unpack(">I", data[at:at + 4])[0]:]


# (case, mutation of 01_dog's bytes, error after "PATH: " or None for a clean end, damaged packets > 0)
CASES: list[tuple[str, Callable[[bytearray], None], str | None, bool]] = [
    ("noise-inside", _noise, None, True),
    ("cut-inside-a-sample", _cut_inside_a_sample, r"truncated: the file ends at byte [\d,]+ but its index", True),
    ("cut-between-samples", _cut_between_samples, r"truncated: the file ends at byte [\d,]+ but its index", False),
    ("index-offset-far-away", _far_offset, r"damaged: its index or data is broken \(the file is not cut short\)",
     False),
    ("index-zero-sizes", _zero_sizes, r"damaged: its index or data is broken \(the file is not cut short\)",
     False),
]


@pytest.mark.parametrize(("mutate", "error", "damaged"), [pytest.param(m, e, d, id=c) for c, m, e, d in CASES])
def test_damage_is_delivered_around_counted_and_named(tmp_path: Path, mutate, error, damaged) -> None:
    data = bytearray(media.DOG.read_bytes())
    mutate(data)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    src = open_source(path)
    frames = []
    with src:
        if error is None:
            frames = list(src)
        else:
            with pytest.raises(SourceError) as err:
                frames.extend(src)
            message = str(err.value)
            assert message.startswith(f"{path}: ") and "\n" not in message
            assert re.search(error, message), message
            assert f"({len(frames)} delivered)" in message
    assert 0 < len(frames) < DECLARED
    assert [f.index for f in frames] == list(range(len(frames)))
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts))
    stats = src.stats
    assert stats.lost == DECLARED - len(frames), "every frame not delivered is counted as lost"
    assert (stats.corrupt > 0) == damaged
    summary = src.loss_summary()
    assert summary is not None and summary.startswith(f"{path}: ")
    assert f"{stats.lost} of {DECLARED} frames lost" in summary


def test_a_clean_file_has_nothing_to_report(tmp_path: Path) -> None:
    path = media.copy_packets(media.DOG, tmp_path / "clip.mp4", frames=10)
    src = open_source(path)
    with src:
        list(src)
    assert src.loss_summary() is None
    assert (src.stats.lost, src.stats.corrupt, src.stats.pts_fixed) == (0, 0, 0)


def test_timestamps_going_back_are_repaired_and_said(tmp_path: Path) -> None:
    # An MPEG-TS file whose clock jumps back by 5 s for the second half, as a damaged or concatenated
    # recording does: pts keep increasing, the jump is counted, no frame is lost or reordered.
    first = media.copy_packets(media.DOG, tmp_path / "a.ts", frames=30, start_s=10.0)
    second = media.copy_packets(media.DOG, tmp_path / "b.ts", frames=30, start_s=5.0)
    both = tmp_path / "joined.ts"
    both.write_bytes(first.read_bytes() + second.read_bytes())
    src = open_source(both)
    with src:
        frames = list(src)
    pts = [f.pts for f in frames]
    assert len(frames) >= 60 and all(b > a for a, b in itertools.pairwise(pts))
    assert src.stats.pts_fixed == 1 and src.stats.lost == 0
    # After the jump the stream's own spacing continues.
    np.testing.assert_allclose(np.diff(pts), 1001 / 30000, atol=1e-3)
    assert "1 timestamp out of order, moved forward" in src.loss_summary()


def test_running_out_of_memory_on_a_damaged_size_field_is_worded_as_damage() -> None:
    # Seen on a bit-flipped clip: FFmpeg's demuxer failed with ENOMEM allocating what a corrupt field
    # claimed, 96 frames in. "cannot allocate memory" alone sends the user to buy RAM.
    import av

    from engine.sources._av import reason

    why = reason(av.error.MemoryError(12, "Cannot allocate memory", "clip.mp4"))
    assert why.startswith("out of memory while reading it (a damaged size field in the data")
