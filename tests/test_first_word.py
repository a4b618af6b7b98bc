"""How soon a segment's first word plays: the publisher's measured lead, its idle silence (counted, not sent, and
replaced by the lead when a segment starts), and the mock's prebuffer derived from the agent's chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc

from providers.base import AvatarFrame, PcmFormat, VideoSpec
from providers.lead import AdaptiveLead
from providers.media import PlayoutClock
from providers.mock.provider import MockSession
from providers.playout import PlayoutTracker
from providers.room_publisher import RoomPublisher
from providers.segments import SegmentBook

RATE, FPS = 24000, 30
PER_FRAME = RATE // FPS
FORMAT = PcmFormat(RATE, 1)
VIDEO = VideoSpec(64, 48, FPS)


# --- the lead -------------------------------------------------------------------------------------------------------

def test_the_lead_starts_at_its_floor() -> None:
    assert AdaptiveLead(0.01, 0.1, now=0.0).lead_s == 0.01


def test_a_late_wake_up_raises_the_lead_at_once_and_it_falls_back_two_windows_later() -> None:
    lead = AdaptiveLead(0.01, 0.1, now=0.0, window_s=2.0)
    lead.observe(0.002, now=0.5)
    assert lead.lead_s == pytest.approx(0.012)
    lead.observe(0.03, now=1.0)  # a stall
    assert lead.lead_s == pytest.approx(0.04)
    lead.observe(0.001, now=2.5)  # the next window still remembers it
    assert lead.lead_s == pytest.approx(0.04)
    lead.observe(0.001, now=4.5)  # two windows on, it is forgotten
    assert lead.lead_s == pytest.approx(0.011)
    assert lead.worst_s == pytest.approx(0.03)


def test_the_lead_never_exceeds_its_cap() -> None:
    lead = AdaptiveLead(0.01, 0.1, now=0.0)
    lead.observe(0.5, now=0.1)
    assert lead.lead_s == 0.1


def test_a_window_without_wake_ups_does_not_lower_the_lead() -> None:
    lead = AdaptiveLead(0.01, 0.1, now=0.0, window_s=2.0)
    lead.observe(0.03, now=1.0)
    lead.observe(0.0, now=9.0)  # nothing was paced from 2 s to 9 s
    assert lead.lead_s == pytest.approx(0.04)


# --- the publisher's skip over idle silence ----------------------------------------------------------------------

class RecordingClock(PlayoutClock):
    """A playout clock that records what the publisher does to it, and says agent audio arrived after every
    silent push (as a stream's chunks would while the segment's prebuffer fills): idle frames pile up ahead."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self.ops: list[tuple[str, int, bool]] = []  # (op, samples, audible)
        self.leads_at_clear: list[float] = []
        self.publisher: RoomPublisher | None = None
        self.audible = asyncio.Event()

    async def push_audio(self, audio: np.ndarray, end_ts: float, *, send: bool = True) -> None:
        await super().push_audio(audio, end_ts, send=send)
        audible = bool(audio.any())
        self.ops.append(("push" if send else "count", audio.size, audible))
        if audible:
            self.audible.set()
        elif self.publisher is not None:
            asyncio.get_running_loop().call_soon(self.publisher.audio_arrived)

    async def clear(self) -> None:
        await super().clear()
        self.ops.append(("clear", 0, False))
        assert self.publisher is not None
        self.leads_at_clear.append(self.publisher.lead.lead_s)


def _frame(audio: np.ndarray, segment_id: int = 0) -> AvatarFrame:
    video = rtc.VideoFrame(VIDEO.width, VIDEO.height, rtc.VideoBufferType.I420,
                           bytes(VIDEO.width * VIDEO.height * 3 // 2))
    return AvatarFrame(video, audio, segment_id, audio.size if segment_id else 0, False, False)


async def _play(before_speech: list[np.ndarray]) -> RecordingClock:
    """Idle frames carrying `before_speech`, then one frame of a segment's speech; what the clock saw."""
    book = SegmentBook(lambda _: None)
    clock = RecordingClock()
    publisher = clock.publisher = RoomPublisher(audio=FORMAT, video=VIDEO, tracker=PlayoutTracker(book, RATE),
                                                connection=None, media=clock)
    seg = book.open()
    speech = np.full(PER_FRAME, 3000, dtype=np.int16)

    async def frames() -> AsyncIterator[AvatarFrame]:
        for audio in before_speech:
            yield _frame(audio)
        yield _frame(speech, seg)
        while True:
            yield _frame(np.zeros(PER_FRAME, dtype=np.int16))

    await publisher.start()
    runner = asyncio.create_task(publisher.run(frames()))
    try:
        async with asyncio.timeout(10):
            while sum(1 for op, _, audible in clock.ops if audible) < 1 + sum(bool(a.any()) for a in before_speech):
                clock.audible.clear()
                await clock.audible.wait()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await publisher.aclose()
    return clock


async def test_idle_silence_is_counted_not_sent_and_a_segments_first_frame_waits_only_behind_the_lead() -> None:
    clock = await _play([np.zeros(PER_FRAME, dtype=np.int16)] * 3)
    speech_at = next(i for i, (_, _, audible) in enumerate(clock.ops) if audible)
    assert {op for op, _, _ in clock.ops[: speech_at - 2]} == {"count"}
    assert [op for op, _, _ in clock.ops[speech_at - 2: speech_at + 1]] == ["clear", "push", "push"]
    kept = clock.ops[speech_at - 1][1]
    assert kept == round(clock.leads_at_clear[0] * RATE)
    assert kept < 3 * PER_FRAME  # less than the idle silence it replaced: the first word came sooner


async def test_silence_behind_audible_audio_is_sent_and_nothing_audible_is_dropped() -> None:
    vendor_idle_sound = np.full(PER_FRAME, 200, dtype=np.int16)
    clock = await _play([vendor_idle_sound, np.zeros(PER_FRAME, dtype=np.int16)])
    assert [op for op, _, _ in clock.ops[:2]] == ["push", "push"]
    assert all(op != "clear" for op, _, _ in clock.ops)


# --- the mock's prebuffer ------------------------------------------------------------------------------------------

async def _first_voiced_frame(session: MockSession, seg: int, chunks: list[int], *, end: bool = False) -> int:
    """Push chunks of the given sizes, then pull frames until the segment plays: the frame's index."""
    for size in chunks:
        await session.push_audio(seg, np.full(size, 1000, dtype=np.int16))
    if end:
        await session.end_segment(seg)
    frames = session.frames()
    for index in range(3):
        frame = await anext(frames)
        if frame.segment_id == seg:
            return index
        await session.push_audio(seg, np.full(chunks[-1], 1000, dtype=np.int16))
    return -1


async def test_a_real_time_stream_starts_once_a_frame_and_its_largest_chunk_are_queued() -> None:
    chunk = RATE // 50  # 20 ms
    # two chunks (40 ms) are less than a frame (33 ms) plus a chunk: the first frame stays idle, the third chunk
    # starts the segment
    assert await _first_voiced_frame(MockSession(VIDEO), 1, [chunk, chunk]) == 1
    assert await _first_voiced_frame(MockSession(VIDEO), 1, [chunk, chunk, chunk]) == 0


async def test_a_segment_that_ended_starts_whatever_is_queued() -> None:
    assert await _first_voiced_frame(MockSession(VIDEO), 1, [RATE // 100], end=True) == 0


async def test_an_explicit_prebuffer_is_kept() -> None:
    assert await _first_voiced_frame(MockSession(VIDEO, prebuffer_ms=0), 1, [RATE // 100]) == 0
    assert await _first_voiced_frame(MockSession(VIDEO, prebuffer_ms=100), 1, [RATE // 50] * 3) == 2
