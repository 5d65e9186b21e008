"""Presentation times as a stream's consumers need them: in seconds, strictly increasing, one per frame,
across damage and reconnections, with every repair counted.

What the stream gives is kept wherever it can be: a frame's pts is the stream's own (plus, after a
reconnection, a constant offset). Where the stream gives none, or one that does not come after the
previous frame's, the frame gets a time the source makes up, and ``SourceStats`` says how many:
- no pts (the first pictures of an RTSP session, raw H.264 files): the previous frame's plus one frame
  interval (``pts_guessed``); the first frame of a stream without any gets 0;
- a pts not after the previous one (a damaged file, a B-frame order the decoder lost): if it goes back
  by more than ``DISCONTINUITY_S`` the stream has restarted its clock (MPEG-TS discontinuities, a camera
  that reset): the offset is moved so the frame follows its predecessor by one interval and later
  frames keep their spacing. A smaller step back is a local glitch: the frame is placed a tenth of an
  interval after its predecessor, so the stream's own times resume as soon as they pass it (both
  ``pts_fixed``);
- a jump forward of more than 1.5 frame intervals, where the stream's frame rate is known, counts the
  frames it skipped as ``lost`` (an estimate: a variable-rate stream can make it too high; a file that
  declares its frame count replaces it with the exact count at its end); a jump of more than
  ``JUMP_S`` is a clock that jumped (a spliced recording), rebased like a restarted one
  (``pts_fixed``), so an hour's jump neither stalls a paced stream nor claims 100,000 lost frames.

After a reconnection the new session's clock starts anywhere (usually near 0): its first timestamped
frame is placed after the last frame before the loss by the wall-clock time between them, so the
timeline keeps both order and the gap's real length.
"""

from __future__ import annotations

from engine.types import SourceStats

DEFAULT_INTERVAL_S = 1 / 30  # a common camera rate, used until a stream shows its own spacing
DISCONTINUITY_S = 1.0  # a step back longer than this is a restarted clock, not a reordered frame
JUMP_S = 10.0  # a step ahead longer than this is a jumped clock, not lost frames (FFmpeg's
#   dts_delta_threshold for the same decision in MPEG-TS)
_GAP_FACTOR = 1.5  # a step over this many frame intervals skipped frames


class Timeline:
    """Turns each decoded frame's stream pts into the pts it is delivered with (see module docstring).

    Args:
        stats: the source's counters; ``pts_guessed``, ``pts_fixed`` and ``lost`` are updated here.
        fps: the stream's frame rate when it is known and plausible, else None.
    """

    def __init__(self, stats: SourceStats, fps: float | None = None) -> None:
        self.stats = stats
        self.fps = fps
        self.last: float | None = None  # the last delivered pts, seconds
        self._last_wall = 0.0  # monotonic time the last frame was stamped
        self._offset = 0.0  # added to the stream's pts
        self._new_session = False  # no timestamped frame yet since new_session()
        self._spacing: float | None = None  # the last step between two frames the stream spaced itself
        self._last_kept = False  # the last frame kept the stream's own pts (so a step from it is real)

    @property
    def interval(self) -> float:
        """One frame's duration in seconds: from the frame rate, else as the stream spaces its frames."""
        if self.fps:
            return 1.0 / self.fps
        return self._spacing or DEFAULT_INTERVAL_S

    def new_session(self) -> None:
        """The next frame comes from a new connection whose clock is unrelated to the old one's."""
        self._new_session = self.last is not None
        self._last_kept = False

    def stamp(self, pts: float | None, now: float) -> float:
        """The delivered pts (seconds) of a frame whose stream pts is ``pts`` (None: none given),
        decoded at monotonic time ``now``."""
        last = self.last
        # In a new session, time since the last frame is the gap's real length (at least one frame).
        since = max(self.interval, now - self._last_wall) if self._new_session else self.interval
        kept = False
        if pts is None:
            self.stats.pts_guessed += 1
            out = 0.0 if last is None else last + since
        elif self._new_session:
            self._offset = last + since - pts
            self._new_session = False
            out = last + since
        else:
            out = pts + self._offset
            if last is not None and out <= last:
                self.stats.pts_fixed += 1
                if last - out > DISCONTINUITY_S:  # a restarted clock: later frames keep their spacing
                    self._offset += last + self.interval - out
                    out = last + self.interval
                else:  # a glitch: the stream's own times take over again once they pass this one
                    out = last + self.interval / 10
            elif last is not None and out - last > JUMP_S:  # a clock that jumped ahead: rebase
                self.stats.pts_fixed += 1
                self._offset -= out - last - self.interval
                out = last + self.interval
            else:
                kept = True
                if last is not None and self._last_kept:
                    step = out - last
                    if self.fps and step > _GAP_FACTOR * self.interval:
                        self.stats.lost += round(step * self.fps) - 1
                    self._spacing = step
        self.last, self._last_wall, self._last_kept = out, now, kept
        return out
