"""Playback accounting: exactly one playback-finished per segment, with the position actually heard.

The ledger knows every segment the agent opened, which output samples belong to which segment (spans recorded as
frames are handed to the room), and how far playout has got (`heard`: output samples that left the audio queue).
A segment finishes normally when its last span has been heard, or interrupted when the ledger is told to interrupt;
either way exactly once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The first sample of a segment was heard."""

    segment_id: int


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """A segment is done. `position` is in output samples per channel."""

    segment_id: int
    position: int
    interrupted: bool


@dataclass(frozen=True, slots=True)
class PlaybackUnderrun:
    """The segment's audio ran out mid-segment and silence was inserted (reported once per segment)."""

    segment_id: int


PlaybackEvent = PlaybackStarted | PlaybackFinished | PlaybackUnderrun


@dataclass(slots=True)
class _Segment:
    id: int
    accepted_s: float = 0.0  # seconds of audio accepted from the agent
    heard: int = 0  # output samples of this segment heard so far
    input_ended: bool = False
    started: bool = False
    finished: bool = False
    underran: bool = False


@dataclass(slots=True)
class _Span:
    start: int  # output sample index of the frame's first sample
    end: int  # one past the frame's last sample
    segment_id: int
    samples: int  # leading samples of the frame that belong to the segment
    done: bool


@dataclass(slots=True)
class LedgerStats:
    """Counters over the ledger's whole life."""

    opened: int = 0
    finished: int = 0
    interrupted: int = 0
    samples_played: int = 0
    video_frames: int = 0
    underruns: int = 0


class PlaybackLedger:
    """Segment bookkeeping for one session. Single-threaded (one event loop); every method is O(1) amortised."""

    def __init__(self, output_rate: int, on_event: Callable[[PlaybackEvent], None]) -> None:
        self._rate = output_rate
        self._on_event = on_event
        self._segments: dict[int, _Segment] = {}
        self._spans: deque[_Span] = deque()
        self._next_id = 1
        self._pushed = 0  # output samples handed to the room
        # running totals over unfinished segments, so the per-chunk buffer check is O(1)
        self._open_accepted_s = 0.0
        self._open_heard = 0
        self.stats = LedgerStats()

    # -- agent side ---------------------------------------------------------------------------------------------
    def open_segment(self) -> int:
        """Open a new segment; returns its id (increasing from 1)."""
        seg = _Segment(self._next_id)
        self._next_id += 1
        self._segments[seg.id] = seg
        self.stats.opened += 1
        return seg.id

    def add_input(self, segment_id: int, seconds: float) -> None:
        """Record that `seconds` of agent audio were queued for the segment."""
        seg = self._segments.get(segment_id)
        if seg is not None:
            seg.accepted_s += seconds
            self._open_accepted_s += seconds

    def end_input(self, segment_id: int) -> None:
        """The agent closed the segment."""
        seg = self._segments.get(segment_id)
        if seg is not None:
            seg.input_ended = True

    @property
    def unfinished(self) -> int:
        """Segments that have not had their playback-finished yet."""
        return len(self._segments)

    def buffered_seconds(self) -> float:
        """Agent audio accepted but not yet heard, over every unfinished segment (O(1))."""
        return max(0.0, self._open_accepted_s - self._open_heard / self._rate)

    # -- room side ----------------------------------------------------------------------------------------------
    @property
    def pushed(self) -> int:
        """Output samples handed to the room so far."""
        return self._pushed

    def frame_pushed(self, samples: int, segment_id: int, segment_samples: int, done: bool) -> bool:
        """Record a frame of `samples` output samples. Returns False if its audio belongs to a finished segment

        (stale after an interrupt), in which case the caller must play silence instead and the frame counts as idle.
        """
        start = self._pushed
        self._pushed += samples
        self.stats.video_frames += 1
        if segment_id == 0:
            return True
        if segment_id not in self._segments:
            return False
        self._spans.append(_Span(start, self._pushed, segment_id, segment_samples, done))
        return True

    def count_underrun(self, segment_id: int) -> None:
        """The provider ran out of agent audio mid-segment and inserted silence."""
        self.stats.underruns += 1
        seg = self._segments.get(segment_id)
        if seg is not None and not seg.underran:
            seg.underran = True
            self._on_event(PlaybackUnderrun(segment_id))

    def heard_up_to(self, heard: int) -> None:
        """Playout reached output sample `heard`: emit started/finished for what was heard."""
        self.stats.samples_played = max(self.stats.samples_played, heard)
        spans = self._spans
        while spans:
            span = spans[0]
            seg = self._segments.get(span.segment_id)
            if seg is None:
                spans.popleft()
                continue
            if heard <= span.start:
                return
            if span.samples > 0 and not seg.started:
                seg.started = True
                self._on_event(PlaybackStarted(seg.id))
            if heard < span.end:
                return
            spans.popleft()
            seg.heard += span.samples
            self._open_heard += span.samples
            if span.done:
                self._finish(seg, interrupted=False)

    def interrupt(self, heard: int) -> None:
        """Finish every unfinished segment as interrupted, at the position heard so far; forget queued spans."""
        partial: dict[int, int] = {}
        for span in self._spans:
            if span.start < heard:
                got = min(span.samples, heard - span.start)
                partial[span.segment_id] = partial.get(span.segment_id, 0) + got
        self._spans.clear()
        for seg in list(self._segments.values()):
            got = partial.get(seg.id, 0)
            seg.heard += got
            self._open_heard += got
            self._finish(seg, interrupted=True)

    def _finish(self, seg: _Segment, *, interrupted: bool) -> None:
        if seg.finished:
            return
        seg.finished = True
        del self._segments[seg.id]
        self._open_accepted_s -= seg.accepted_s
        self._open_heard -= seg.heard
        if not self._segments:  # no float residue across many segments
            self._open_accepted_s, self._open_heard = 0.0, 0
        self.stats.finished += 1
        if interrupted:
            self.stats.interrupted += 1
        self._on_event(PlaybackFinished(seg.id, seg.heard, interrupted))
