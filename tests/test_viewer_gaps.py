"""The viewer's frame accounting: gaps in the received frames' timestamps, where they are and how many frames."""

from __future__ import annotations

from viewer.participant import Reception, VideoSample

PERIOD_US = 33_333  # 30 fps


def _reception(frame_numbers: list[int]) -> Reception:
    rx = Reception()
    for i, n in enumerate(frame_numbers):
        rx.video.append(VideoSample(t=10.0 + i, opening=0.0, width=64, height=48, timestamp_us=n * PERIOD_US))
    return rx


def test_gaps_name_the_frame_after_them_and_count_what_is_missing() -> None:
    rx = _reception([0, 1, 2, 6, 7, 9])
    assert rx.frame_gaps(30) == [(13.0, 3), (15.0, 1)]  # the frames numbered 3-5 and 8 never arrived
    assert rx.dropped_frames(30) == 4


def test_an_unbroken_run_has_no_gaps() -> None:
    assert _reception(list(range(100))).frame_gaps(30) == []
    assert _reception([5]).dropped_frames(30) == 0
