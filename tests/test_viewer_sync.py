"""viewer.sync reads lips and voice as a person meets them: a frame on screen until the next, a chunk heard over
its span. Lips rendered from exactly the audio each frame accompanies, shown when that audio starts, are in sync."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.sync import av_offset

FPS = 30
CHUNK_S = 0.01


def synced_recording(shift_s: float = 0.0, seconds: float = 8.0) -> tuple[list[tuple[float, float]],
                                                                          list[tuple[float, float]]]:
    """Audio chunks (end time, level) of a random syllable envelope, and the frames a mock face renders from it:
    each frame's mouth is the mean level of the audio it accompanies, and arrives when that audio starts (+shift)."""
    rng = np.random.default_rng(7)
    syllables = np.repeat(rng.random(int(seconds / 0.15)), round(0.15 / CHUNK_S))  # 150 ms syllables
    audio = [((i + 1) * CHUNK_S, float(level)) for i, level in enumerate(syllables)]
    per_frame = 1 / FPS
    video = []
    for k in range(int(seconds * FPS)):
        start, end = k * per_frame, (k + 1) * per_frame
        span = [lv for t, lv in audio if start < t - CHUNK_S / 2 < end]
        video.append((start + shift_s, float(np.mean(span)) if span else 0.0))
    return video, audio


def test_frames_shown_with_their_own_audio_read_as_in_sync() -> None:
    offset, corr = av_offset(*synced_recording())
    assert abs(offset) <= 0.005
    assert corr > 0.9


@pytest.mark.parametrize("shift_s", [-0.06, 0.04, 0.1])
def test_a_shift_reads_as_that_shift(shift_s: float) -> None:
    offset, _ = av_offset(*synced_recording(shift_s))
    assert offset == pytest.approx(shift_s, abs=0.0051)
