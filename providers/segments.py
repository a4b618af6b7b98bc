"""The segment book: one session's speech segments, each finished exactly once.

The session owns one book for its whole life. Segments are opened here (ids count up from 1 over the session), the
agent's input is recorded against them, and whatever carries the audio to the avatar (a pipeline) reports what was
heard: a segment's first heard sample (`started`), heard time (`heard`), its normal end (`finish`). An interrupt,
the end of an audio stream or of the session finishes what is left (`finish_open`). Whatever a provider or pipeline
does, the book emits at most one SegmentStarted and exactly one SegmentFinished per segment, in that order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SegmentStarted:
    """The segment's first sample was heard."""

    segment_id: int


@dataclass(frozen=True, slots=True)
class SegmentFinished:
    """The segment is done: `position_s` seconds of it were heard."""

    segment_id: int
    position_s: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class SegmentUnderrun:
    """The segment's audio ran out mid-segment and silence was inserted (reported once per segment)."""

    segment_id: int


SegmentEvent = SegmentStarted | SegmentFinished | SegmentUnderrun


@dataclass(slots=True)
class _Segment:
    id: int
    accepted_s: float = 0.0  # agent audio accepted for it
    heard_s: float = 0.0  # of it, heard so far
    input_ended: bool = False
    started: bool = False
    underran: bool = False


@dataclass(slots=True)
class BookStats:
    """Counters over the book's whole life."""

    opened: int = 0
    finished: int = 0
    interrupted: int = 0
    underruns: int = 0


class SegmentBook:
    """Segments of one session. Single-threaded (one event loop); every method is O(1) but `finish_open`."""

    def __init__(self, on_event: Callable[[SegmentEvent], None]) -> None:
        self._on_event = on_event
        self._open: dict[int, _Segment] = {}
        self._next_id = 1
        # running totals over open segments, so the per-chunk buffer check is O(1)
        self._open_accepted_s = 0.0
        self._open_heard_s = 0.0
        self.stats = BookStats()

    # -- the agent's side ---------------------------------------------------------------------------------------
    def open(self) -> int:
        """Open a new segment; returns its id."""
        seg = _Segment(self._next_id)
        self._next_id += 1
        self._open[seg.id] = seg
        self.stats.opened += 1
        return seg.id

    def add_input(self, segment_id: int, seconds: float) -> None:
        """`seconds` of agent audio were queued for the segment."""
        seg = self._open.get(segment_id)
        if seg is not None:
            seg.accepted_s += seconds
            self._open_accepted_s += seconds

    def end_input(self, segment_id: int) -> None:
        """The agent closed the segment."""
        seg = self._open.get(segment_id)
        if seg is not None:
            seg.input_ended = True

    def is_open(self, segment_id: int) -> bool:
        """True until the segment's SegmentFinished."""
        return segment_id in self._open

    @property
    def unfinished(self) -> int:
        """Segments that have not finished yet."""
        return len(self._open)

    def buffered_seconds(self) -> float:
        """Agent audio accepted but not heard yet, over every open segment."""
        return max(0.0, self._open_accepted_s - self._open_heard_s)

    # -- the pipeline's side ------------------------------------------------------------------------------------
    def started(self, segment_id: int) -> None:
        """The segment's first sample was heard (reported once, whatever the caller repeats)."""
        seg = self._open.get(segment_id)
        if seg is not None and not seg.started:
            seg.started = True
            self._on_event(SegmentStarted(seg.id))

    def heard(self, segment_id: int, seconds: float) -> None:
        """`seconds` more of the segment were heard."""
        seg = self._open.get(segment_id)
        if seg is not None and seconds > 0:
            seg.heard_s += seconds
            self._open_heard_s += seconds

    def underrun(self, segment_id: int) -> None:
        """The segment's audio ran out mid-segment and silence was inserted."""
        self.stats.underruns += 1
        seg = self._open.get(segment_id)
        if seg is not None and not seg.underran:
            seg.underran = True
            self._on_event(SegmentUnderrun(seg.id))

    def finish(self, segment_id: int, *, interrupted: bool = False) -> None:
        """The segment is done (a no-op if it already finished)."""
        seg = self._open.pop(segment_id, None)
        if seg is None:
            return
        self._open_accepted_s -= seg.accepted_s
        self._open_heard_s -= seg.heard_s
        if not self._open:  # no float residue across many segments
            self._open_accepted_s = self._open_heard_s = 0.0
        self.stats.finished += 1
        if interrupted:
            self.stats.interrupted += 1
        self._on_event(SegmentFinished(seg.id, seg.heard_s, interrupted))

    def finish_open(self) -> None:
        """Finish every open segment as interrupted, in the order they were opened."""
        for segment_id in list(self._open):
            self.finish(segment_id, interrupted=True)
