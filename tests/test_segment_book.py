"""The segment book and the playout tracker on their own: heard positions, exactly-once finishes, stale frames,
the O(1) buffer totals."""

from __future__ import annotations

import pytest

from providers.playout import PlayoutTracker
from providers.segments import SegmentBook, SegmentEvent, SegmentFinished, SegmentStarted, SegmentUnderrun

RATE = 24000
FRAME = 800  # 30 fps


def book_and_tracker() -> tuple[SegmentBook, PlayoutTracker, list[SegmentEvent]]:
    events: list[SegmentEvent] = []
    book = SegmentBook(events.append)
    return book, PlayoutTracker(book, RATE), events


def test_segment_finishes_once_when_its_last_sample_is_heard() -> None:
    book, tracker, events = book_and_tracker()
    seg = book.open()
    book.add_input(seg, 2400 / RATE)
    book.end_input(seg)
    for done in (False, False, True):
        assert tracker.is_playing(seg)
        tracker.frame_pushed(FRAME, seg, FRAME, done)
    tracker.heard_up_to(1)
    assert events == [SegmentStarted(seg)]
    tracker.heard_up_to(3 * FRAME - 1)
    assert events == [SegmentStarted(seg)], "not finished before its last sample is heard"
    tracker.heard_up_to(3 * FRAME)
    tracker.heard_up_to(10 * FRAME)
    assert events == [SegmentStarted(seg), SegmentFinished(seg, 3 * FRAME / RATE, False)]
    assert book.unfinished == 0 and book.stats.finished == 1 and book.stats.interrupted == 0


def test_interrupt_reports_the_partially_heard_frame() -> None:
    book, tracker, events = book_and_tracker()
    first, second = book.open(), book.open()
    book.add_input(first, 1.0)
    tracker.frame_pushed(FRAME, first, FRAME, False)
    tracker.frame_pushed(FRAME, first, 500, True)  # the segment's last 500 samples, then silence
    tracker.frame_pushed(FRAME, second, FRAME, False)
    tracker.heard_up_to(FRAME + 200)  # the second frame is 200 samples in
    tracker.credit_partial(FRAME + 200)
    book.finish_open()
    tracker.credit_partial(2 * FRAME)  # a second interrupt credits and finishes nothing again
    book.finish_open()
    finishes = [e for e in events if isinstance(e, SegmentFinished)]
    assert finishes == [SegmentFinished(first, (FRAME + 200) / RATE, True), SegmentFinished(second, 0, True)]
    assert book.unfinished == 0 and book.stats.interrupted == 2


def test_frames_of_a_finished_segment_are_stale() -> None:
    book, tracker, events = book_and_tracker()
    seg = book.open()
    book.finish_open()
    assert not tracker.is_playing(seg), "stale audio must be replaced by silence"
    tracker.frame_pushed(FRAME, seg, FRAME, False)
    assert tracker.is_playing(0), "idle frames are never stale"
    tracker.frame_pushed(FRAME, 0, 0, False)
    assert [e for e in events if isinstance(e, SegmentFinished)] == [SegmentFinished(seg, 0, True)]


def test_empty_segment_finishes_without_starting() -> None:
    book, tracker, events = book_and_tracker()
    seg = book.open()
    book.end_input(seg)
    tracker.frame_pushed(FRAME, seg, 0, True)
    tracker.heard_up_to(FRAME)
    assert events == [SegmentFinished(seg, 0, False)]


def test_underrun_is_reported_once_per_segment() -> None:
    book, tracker, events = book_and_tracker()
    seg = book.open()
    tracker.underrun(seg)
    book.underrun(seg)
    assert events == [SegmentUnderrun(seg)] and book.stats.underruns == 2


def test_the_book_finishes_each_segment_once_whatever_it_is_told() -> None:
    book, _, events = book_and_tracker()
    seg = book.open()
    book.started(seg)
    book.started(seg)
    book.heard(seg, 0.5)
    book.finish(seg)
    book.finish(seg, interrupted=True)
    book.heard(seg, 1.0)
    book.started(seg)
    book.finish_open()
    assert events == [SegmentStarted(seg), SegmentFinished(seg, 0.5, False)]
    assert book.stats.finished == 1 and book.stats.interrupted == 0


def test_buffered_seconds_tracks_accepted_minus_heard() -> None:
    book, tracker, _ = book_and_tracker()
    a, b = book.open(), book.open()
    book.add_input(a, 0.5)
    book.add_input(b, 0.25)
    assert book.buffered_seconds() == pytest.approx(0.75)
    tracker.frame_pushed(RATE // 10, a, RATE // 10, False)
    tracker.heard_up_to(RATE // 10)
    assert book.buffered_seconds() == pytest.approx(0.65)
    tracker.credit_partial(RATE // 10)
    book.finish_open()
    assert book.buffered_seconds() == 0.0
    # many segments later the running totals carry no residue
    for _ in range(1000):
        seg = book.open()
        book.add_input(seg, 0.1)
        book.end_input(seg)
        tracker.frame_pushed(2400, seg, 2400, True)
        tracker.heard_up_to(tracker.pushed)
    assert book.unfinished == 0 and book.buffered_seconds() == 0.0
