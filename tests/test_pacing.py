"""The mock's pacing through the real LiveKit AudioSource and VideoSource, without a room.

60 s of speech in one segment, at a frame rate that divides the sample rate (30 fps: 800 samples a frame) and one
that does not (29 fps: 827.59 samples a frame). Every video frame must carry exactly its share of audio, so after
any number of frames N the audio pushed is floor(N * rate / fps) samples: frames per second of audio equals fps, and
no drift can accumulate. The synchronizer's own clocks (timestamps of what it actually consumed) must agree.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from providers.base import VideoSpec
from providers.mock.provider import MOCK_INFO, MockSession
from providers.playout import PlayoutTracker
from providers.room_publisher import RoomPublisher
from providers.segments import SegmentBook, SegmentEvent, SegmentFinished

SECONDS = 60


async def play_one_segment(fps: int) -> tuple[int, int, int, float, float, float]:
    """(frames, video frames released, samples pushed, segment position s, sync audio end, sync last video)."""
    rate = MOCK_INFO.audio_format.sample_rate
    finished = asyncio.Event()
    positions: list[float] = []

    def on_event(ev: SegmentEvent) -> None:
        if isinstance(ev, SegmentFinished):
            positions.append(ev.position_s)
            finished.set()

    book = SegmentBook(on_event)
    tracker = PlayoutTracker(book, rate)
    session = MockSession(VideoSpec(640, 480, fps))
    publisher = RoomPublisher(audio=session.output_format, video=session.video, tracker=tracker, connection=None)
    await publisher.start()
    runner = asyncio.create_task(publisher.run(session.frames()))
    try:
        seg = book.open()
        t = np.arange(SECONDS * rate) / rate
        audio = (np.sin(2 * np.pi * 150 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t)) * 8000).astype(np.int16)
        for i in range(0, audio.size, rate // 50):
            await session.push_audio(seg, audio[i : i + rate // 50])
        await session.end_segment(seg)
        book.end_input(seg)
        async with asyncio.timeout(SECONDS * 3):
            await finished.wait()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        sync = publisher.synced_media
        assert sync is not None
        async with asyncio.timeout(10):
            await sync.wait_for_playout()
        return (tracker.stats.video_frames, publisher.videos_released, tracker.pushed, positions[0],
                sync.last_audio_time, sync.last_video_time)
    finally:
        runner.cancel()
        await publisher.aclose()
        await session.aclose()


async def test_sixty_seconds_of_audio_keep_exact_frame_cadence() -> None:
    rate = MOCK_INFO.audio_format.sample_rate
    results = await asyncio.gather(play_one_segment(30), play_one_segment(29))
    for fps, (frames, released, samples, position, audio_end, last_video) in zip((30, 29), results, strict=True):
        assert position == pytest.approx(SECONDS, abs=1e-9), "the whole segment was heard"
        assert frames >= SECONDS * fps
        # frames per second of audio == fps, exactly, however many frames
        assert samples == frames * rate // fps
        # the synchronizer showed every released frame, in order, on the audio's own clock: frame k starts at k/fps
        assert last_video == pytest.approx((released - 1) / fps, abs=1e-9)
        # the frames still waiting in the delay line when playout stopped are the ones whose audio had not begun:
        # the audio pushed ends exactly where the unreleased frames' audio ends
        assert audio_end == pytest.approx(frames / fps, abs=1 / rate)
        assert 0 < frames - released <= 8
