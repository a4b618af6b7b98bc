"""The speech cursor on its own: what a stream-pair vendor is playing, read from the audio it returns."""

from __future__ import annotations

import numpy as np

from providers.speech_cursor import IDLE, FrameLabel, SpeechCursor

IN, OUT = 16000, 48000
FRAME = 960  # output samples per frame (20 ms)
FRAME_IN = FRAME * IN // OUT  # the input samples one frame plays


def voice(seconds: float) -> np.ndarray:
    n = round(seconds * IN)
    return (np.cos(np.arange(n) / IN * 2 * np.pi * 200) * 8000).astype(np.int16)  # loud from its first sample


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * IN), dtype=np.int16)


def play(cursor: SpeechCursor, frames: int, voiced: bool = True) -> list[FrameLabel]:
    return [cursor.take(FRAME, voiced) for _ in range(frames)]


def heard(labels: list[FrameLabel], segment_id: int) -> int:
    """Output samples credited to a segment."""
    return sum(label.samples for label in labels if label.segment_id == segment_id)


def test_nothing_sent_is_idle() -> None:
    assert play(SpeechCursor(IN, OUT), 3) == [IDLE] * 3


def test_anchors_on_the_first_voice_and_credits_the_silence_before_it() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, np.concatenate([silence(0.2), voice(0.8)]))
    cursor.ended(1)
    assert play(cursor, 5, voiced=False) == [IDLE] * 5, "the vendor has not started: nothing is credited"
    labels = play(cursor, 41)
    first = labels[0]
    assert first.segment_id == 1 and first.samples == (round(0.2 * IN) + FRAME_IN) * OUT // IN
    assert heard(labels, 1) == OUT, "the whole second is credited"
    assert [label.done for label in labels].count(True) == 1
    assert labels[-1] == IDLE


def test_segment_end_is_the_frame_that_plays_its_last_sample() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, voice(FRAME_IN * 3 / IN))
    cursor.ended(1)
    labels = play(cursor, 4)
    assert [(label.segment_id, label.samples, label.done) for label in labels] == [
        (1, FRAME, False), (1, FRAME, False), (1, FRAME, True), (0, 0, False)]


def test_back_to_back_segments_keep_their_own_positions() -> None:
    cursor = SpeechCursor(IN, OUT)
    half = FRAME_IN // 2
    cursor.sent_audio(1, voice((FRAME_IN * 2 + half) / IN))  # ends half-way into a frame
    cursor.ended(1)
    cursor.sent_audio(2, voice(FRAME_IN * 2 / IN))
    cursor.ended(2)
    labels = play(cursor, 6)
    assert heard(labels, 1) == (FRAME_IN * 2 + half) * OUT // IN
    assert heard(labels, 2) == FRAME_IN * 2 * OUT // IN, "the boundary's remainder is credited to the next segment"
    assert [label.segment_id for label in labels if label.done] == [1, 2]


def test_agent_running_late_is_an_underrun_then_the_cursor_anchors_again() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, voice(FRAME_IN * 2 / IN))
    labels = play(cursor, 2)
    assert labels[-1].underrun and not labels[-1].done
    assert play(cursor, 2, voiced=False) == [IDLE] * 2, "the vendor plays silence while it waits"
    cursor.sent_audio(1, voice(FRAME_IN / IN))
    cursor.ended(1)
    later = play(cursor, 2)
    assert heard(labels + later, 1) == FRAME * 3
    assert later[0].done


def test_an_empty_segment_ends_with_the_next_frame() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.ended(7)
    assert cursor.take(FRAME, False) == FrameLabel(7, 0, done=True)
    assert cursor.take(FRAME, False) == IDLE


def test_an_all_silent_segment_is_anchored_by_the_vendor_speaking() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, silence(FRAME_IN * 2 / IN))
    cursor.ended(1)
    assert play(cursor, 3, voiced=False) == [IDLE] * 3
    cursor.speaking(True)
    labels = play(cursor, 2, voiced=False)
    assert heard(labels, 1) == FRAME * 2 and labels[-1].done


def test_a_vendor_that_never_plays_is_anchored_after_the_timeout() -> None:
    cursor = SpeechCursor(IN, OUT, anchor_timeout_s=0.0)
    cursor.sent_audio(1, voice(FRAME_IN / IN))
    cursor.ended(1)
    label = cursor.take(FRAME, False)
    assert label == FrameLabel(1, FRAME, done=True)


def test_keep_alive_silence_is_nobody_s() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(0, silence(FRAME_IN * 2 / IN))
    cursor.sent_audio(1, voice(FRAME_IN / IN))
    cursor.ended(1)
    labels = play(cursor, 3)
    assert heard(labels, 0) == 0
    assert heard(labels, 1) == FRAME


def test_clear_forgets_everything_queued() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, voice(1.0))
    play(cursor, 2)
    cursor.clear()
    assert cursor.idle and play(cursor, 2) == [IDLE] * 2


def test_cut_finishes_each_queued_segment_as_cut_short() -> None:
    cursor = SpeechCursor(IN, OUT)
    cursor.sent_audio(1, voice(1.0))
    cursor.ended(1)
    cursor.sent_audio(2, voice(1.0))
    play(cursor, 1)
    cursor.cut()
    assert not cursor.idle
    assert play(cursor, 3, voiced=False) == [FrameLabel(1, 0, done=True, cut=True),
                                              FrameLabel(2, 0, done=True, cut=True), IDLE]
    assert cursor.idle
