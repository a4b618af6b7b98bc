"""The playback ledger on its own: heard positions, exactly-once finishes, stale frames, the O(1) buffer totals."""

from __future__ import annotations

import pytest

from providers.playback import PlaybackEvent, PlaybackFinished, PlaybackLedger, PlaybackStarted, PlaybackUnderrun

RATE = 24000
FRAME = 800  # 30 fps


def ledger() -> tuple[PlaybackLedger, list[PlaybackEvent]]:
    events: list[PlaybackEvent] = []
    return PlaybackLedger(RATE, events.append), events


def test_segment_finishes_once_when_its_last_sample_is_heard() -> None:
    led, events = ledger()
    seg = led.open_segment()
    led.add_input(seg, 2400 / RATE)
    led.end_input(seg)
    assert led.frame_pushed(FRAME, seg, FRAME, False)
    assert led.frame_pushed(FRAME, seg, FRAME, False)
    assert led.frame_pushed(FRAME, seg, FRAME, True)
    led.heard_up_to(1)
    assert events == [PlaybackStarted(seg)]
    led.heard_up_to(3 * FRAME - 1)
    assert events == [PlaybackStarted(seg)], "not finished before its last sample is heard"
    led.heard_up_to(3 * FRAME)
    led.heard_up_to(10 * FRAME)
    assert events == [PlaybackStarted(seg), PlaybackFinished(seg, 3 * FRAME, False)]
    assert led.unfinished == 0 and led.stats.finished == 1 and led.stats.interrupted == 0


def test_interrupt_reports_the_partially_heard_frame() -> None:
    led, events = ledger()
    first, second = led.open_segment(), led.open_segment()
    led.add_input(first, 1.0)
    led.frame_pushed(FRAME, first, FRAME, False)
    led.frame_pushed(FRAME, first, 500, True)  # the segment's last 500 samples, then silence
    led.frame_pushed(FRAME, second, FRAME, False)
    led.heard_up_to(FRAME + 200)  # the second frame is 200 samples in
    led.interrupt(FRAME + 200)
    led.interrupt(2 * FRAME)  # a second interrupt finishes nothing again
    finishes = [e for e in events if isinstance(e, PlaybackFinished)]
    assert finishes == [PlaybackFinished(first, FRAME + 200, True), PlaybackFinished(second, 0, True)]
    assert led.unfinished == 0 and led.stats.interrupted == 2


def test_frames_of_a_finished_segment_are_stale() -> None:
    led, events = ledger()
    seg = led.open_segment()
    led.interrupt(0)
    assert not led.frame_pushed(FRAME, seg, FRAME, False), "stale audio must be replaced by silence"
    assert led.frame_pushed(FRAME, 0, 0, False), "idle frames are never stale"
    assert [e for e in events if isinstance(e, PlaybackFinished)] == [PlaybackFinished(seg, 0, True)]


def test_empty_segment_finishes_without_starting() -> None:
    led, events = ledger()
    seg = led.open_segment()
    led.end_input(seg)
    led.frame_pushed(FRAME, seg, 0, True)
    led.heard_up_to(FRAME)
    assert events == [PlaybackFinished(seg, 0, False)]


def test_underrun_is_reported_once_per_segment() -> None:
    led, events = ledger()
    seg = led.open_segment()
    led.count_underrun(seg)
    led.count_underrun(seg)
    assert events == [PlaybackUnderrun(seg)] and led.stats.underruns == 2


def test_buffered_seconds_tracks_accepted_minus_heard() -> None:
    led, _ = ledger()
    a, b = led.open_segment(), led.open_segment()
    led.add_input(a, 0.5)
    led.add_input(b, 0.25)
    assert led.buffered_seconds() == pytest.approx(0.75)
    led.frame_pushed(RATE // 10, a, RATE // 10, False)
    led.heard_up_to(RATE // 10)
    assert led.buffered_seconds() == pytest.approx(0.65)
    led.interrupt(RATE // 10)
    assert led.buffered_seconds() == 0.0
    # many segments later the running totals carry no residue
    for _ in range(1000):
        seg = led.open_segment()
        led.add_input(seg, 0.1)
        led.end_input(seg)
        led.frame_pushed(2400, seg, 2400, True)
        led.heard_up_to(led.pushed)
    assert led.unfinished == 0 and led.buffered_seconds() == 0.0
