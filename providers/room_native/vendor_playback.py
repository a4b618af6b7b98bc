"""A room-native vendor's playback RPCs turned into the session's segment book calls, in order, bounded.

The vendor's `lk.playback_started` / `lk.playback_finished` carry no segment id: they are paired with the segments
streamed to it, oldest first. What a vendor forgets is made up here, so the agent never waits on a vendor:

- a segment the vendor has not finished `FINISH_GRACE_S` after all its audio could have played (counted from when it
  reached the head of the line) is finished here, with what had played by the clock;
- a segment with no audio is never streamed (the stock worker would never finish it): it finishes when it reaches
  the head of the line;
- a finish that cannot be the head's (an interrupted one outside an interrupt, or one for a stream not yet
  closed: a late answer about a segment already finished) is dropped.

How far the head has played is credited by the clock from its start (the vendor's `lk.playback_started`, or for a
vendor that sends none, when it reached the head), and replaced by the vendor's own position when it finishes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

from providers.segments import SegmentBook

log = logging.getLogger(__name__)

FINISH_GRACE_S = 2.0  # beyond its audio's length, how long a vendor may take to finish a segment


@dataclass(slots=True)
class _Streamed:
    segment_id: int
    audio_s: float = 0.0  # written to the vendor
    closed: bool = False  # its stream's trailer was sent (or it had no audio)
    head_since: float | None = None  # when it became the oldest unfinished
    started_at: float | None = None  # when it started playing
    credited_s: float = 0.0  # heard credited to the book so far


class VendorPlayback:
    """Pairs one vendor's playback events with the segments streamed to it."""

    def __init__(self, book: SegmentBook, *, vendor_signals_start: bool, clock: object = time) -> None:
        self._book = book
        self._signals_start = vendor_signals_start
        self._clock = clock
        self._line: deque[_Streamed] = deque()
        self._clearing = False
        self.vendor_finishes = 0  # finishes the vendor sent that were paired
        self.made_up = 0  # finishes the vendor did not send in time
        self.dropped = 0  # vendor finishes that could not be paired
        self.heard_s = 0.0  # credited to the book as heard, over every segment

    def _now(self) -> float:
        return self._clock.monotonic()  # type: ignore[attr-defined, no-any-return]

    # -- the agent's side ---------------------------------------------------------------------------------------
    def wrote(self, segment_id: int, seconds: float) -> None:
        """`seconds` of the segment's audio went to the vendor."""
        entry = self._entry(segment_id)
        entry.audio_s += seconds
        self._advance()

    def closed(self, segment_id: int) -> None:
        """The segment's stream ended (or, with no audio written, it never had one)."""
        entry = self._entry(segment_id)
        entry.closed = True
        self._advance()

    def _entry(self, segment_id: int) -> _Streamed:
        if self._line and self._line[-1].segment_id == segment_id:
            return self._line[-1]
        entry = _Streamed(segment_id)
        self._line.append(entry)
        return entry

    # -- the vendor's side --------------------------------------------------------------------------------------
    def vendor_started(self) -> None:
        """`lk.playback_started`: the oldest segment not started yet began to play."""
        for entry in self._line:
            if entry.started_at is None and entry.audio_s > 0:
                entry.started_at = self._now()
                self._book.started(entry.segment_id)
                return

    def vendor_finished(self, position_s: float, interrupted: bool) -> bool:
        """`lk.playback_finished`; False if it could not be paired (and was dropped)."""
        head = self._line[0] if self._line else None
        if head is None or head.audio_s == 0 or (interrupted and not self._clearing) or (
                not interrupted and not head.closed):
            self.dropped += 1
            log.info("a vendor playback_finished could not be paired with a segment: dropped")
            return False
        self.vendor_finishes += 1
        self._finish(head, min(max(position_s, 0.0), head.audio_s), interrupted)
        return True

    # -- time and interrupts ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Credit what the clock says was heard; finish a head whose vendor is late. Called every ~100 ms."""
        self._advance()
        head = self._line[0] if self._line else None
        if head is None or head.audio_s == 0:
            return
        now = self._now()
        if head.started_at is None and not self._signals_start and head.head_since is not None:
            head.started_at = head.head_since
            self._book.started(head.segment_id)
        self._credit(head, now)
        since = head.started_at if head.started_at is not None else head.head_since
        if head.closed and since is not None and now >= since + head.audio_s + FINISH_GRACE_S:
            self.made_up += 1
            log.warning("segment %d: the vendor did not finish it in time; finished by the gateway", head.segment_id)
            self._finish(head, head.audio_s, False)

    def begin_clear(self) -> None:
        """An interrupt: the vendor's next interrupted finish is the head's."""
        self._clearing = True

    def end_clear(self) -> None:
        """The interrupt is over: credit the clock's estimate to what is left (the book then finishes it)."""
        now = self._now()
        for entry in self._line:
            self._credit(entry, now)
        self._line.clear()
        self._clearing = False

    def hand_over(self) -> None:
        """The vendor is gone: what it was given and never finished is finished interrupted (with the clock's
        estimate); a segment still open for input goes on elsewhere (its book entry stays open)."""
        now = self._now()
        for entry in self._line:
            self._credit(entry, now)
            if entry.closed:
                self._book.finish(entry.segment_id, interrupted=True)
        self._line.clear()

    @property
    def head_open(self) -> bool:
        """Whether a segment with audio is still waiting for its finish."""
        return any(entry.audio_s > 0 for entry in self._line)

    def _credit(self, entry: _Streamed, now: float) -> None:
        if entry.started_at is None:
            return
        heard = min(entry.audio_s, now - entry.started_at)
        if heard > entry.credited_s:
            self._book.heard(entry.segment_id, heard - entry.credited_s)
            self.heard_s += heard - entry.credited_s
            entry.credited_s = heard

    def _finish(self, entry: _Streamed, position_s: float, interrupted: bool) -> None:
        if position_s > entry.credited_s:
            self._book.heard(entry.segment_id, position_s - entry.credited_s)
            self.heard_s += position_s - entry.credited_s
            entry.credited_s = position_s
        self._line.popleft()
        self._book.finish(entry.segment_id, interrupted=interrupted)
        self._advance()

    def _advance(self) -> None:
        """Finish empty closed segments at the head; stamp when the head became the head."""
        while self._line:
            head = self._line[0]
            if head.head_since is None:
                head.head_since = self._now()
            if head.audio_s == 0 and head.closed:
                self._line.popleft()
                self._book.finish(head.segment_id)
                continue
            return
