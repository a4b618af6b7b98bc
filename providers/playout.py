"""Playout tracking: which output samples belong to which segment, and how far playout has got.

A publisher records a span per frame it hands to the room (`frame_pushed`) and tells the tracker how many output
samples have left its audio queue (`heard_up_to`). The tracker turns that into the segment book's started / heard /
finished calls: a segment finishes normally when its last span has been heard. On an interrupt it credits the
partly heard frames (`credit_partial`) and forgets the rest. Segment state itself lives in the book.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from providers.segments import SegmentBook


@dataclass(slots=True)
class _Span:
    start: int  # output sample index of the frame's first sample
    end: int  # one past the frame's last sample
    segment_id: int
    samples: int  # leading samples of the frame that belong to the segment
    done: bool
    cut: bool  # with done: the segment was cut short


@dataclass(slots=True)
class PlayoutStats:
    """Counters over the tracker's whole life."""

    samples_played: int = 0
    video_frames: int = 0


class PlayoutTracker:
    """Spans of one publisher's output. Every method is O(1) amortised."""

    def __init__(self, book: SegmentBook, output_rate: int) -> None:
        self._book = book
        self._rate = output_rate
        self._spans: deque[_Span] = deque()
        self._pushed = 0  # output samples handed to the room
        self.stats = PlayoutStats()

    @property
    def pushed(self) -> int:
        """Output samples handed to the room so far."""
        return self._pushed

    def is_playing(self, segment_id: int) -> bool:
        """Whether a frame of `segment_id` plays its audio: idle frames do, frames of a finished segment (stale
        after an interrupt) play silence instead."""
        return segment_id == 0 or self._book.is_open(segment_id)

    def frame_pushed(self, samples: int, segment_id: int, segment_samples: int, done: bool, cut: bool = False
                     ) -> None:
        """Record a frame of `samples` output samples. A frame of a segment that is not `is_playing` (stale after an
        interrupt) is played as silence by the caller and counts as idle."""
        start = self._pushed
        self._pushed += samples
        self.stats.video_frames += 1
        if segment_id and self.is_playing(segment_id):
            self._spans.append(_Span(start, self._pushed, segment_id, segment_samples, done, cut))

    def silence_pushed(self, samples: int) -> None:
        """Record silence handed to the room outside any frame (idle padding)."""
        self._pushed += samples

    def underrun(self, segment_id: int) -> None:
        """The provider ran out of agent audio mid-segment and inserted silence."""
        self._book.underrun(segment_id)

    def heard_up_to(self, heard: int) -> None:
        """Playout reached output sample `heard`: report what of each segment was heard."""
        self.stats.samples_played = max(self.stats.samples_played, heard)
        book, spans = self._book, self._spans
        while spans:
            span = spans[0]
            if not book.is_open(span.segment_id):
                spans.popleft()
                continue
            if heard <= span.start:
                return
            if span.samples > 0:
                book.started(span.segment_id)
            if heard < span.end:
                return
            spans.popleft()
            book.heard(span.segment_id, span.samples / self._rate)
            if span.done:
                book.finish(span.segment_id, interrupted=span.cut)

    def credit_partial(self, heard: int) -> None:
        """Playout stops at output sample `heard`: credit what of the queued frames was heard, forget them all."""
        book = self._book
        for span in self._spans:
            if span.start < heard and span.samples > 0 and book.is_open(span.segment_id):
                book.started(span.segment_id)
                book.heard(span.segment_id, min(span.samples, heard - span.start) / self._rate)
        self._spans.clear()
