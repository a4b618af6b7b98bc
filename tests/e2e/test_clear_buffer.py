"""clear_buffer mid-utterance: the agent interrupts, and what the viewer receives next is silence and a closed
mouth. Asserted by content (counts of received frames and audio chunks after the interrupted finish), not by time.
"""

from __future__ import annotations

import numpy as np
import pytest
from avatar.v1 import session_pb2

from agent_client import PlaybackEvent, PlaybackFinished, PlaybackStarted
from tests.e2e.e2e_helpers import (
    EventLog,
    Harness,
    chunked,
    speech_clip,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIP_S = 8.0
HEARD_BEFORE_CLEAR = 80  # 10 ms chunks of loud speech the viewer must have received before the agent clears
# after PlaybackFinished(interrupted) reaches the agent: within CLOSE_WITHIN frames (1 s at 30 fps) the mouth must
# be closed and stay closed up to WATCH_FRAMES; within QUIET_WITHIN audio chunks (1 s) the audio must be silent
# and stay silent up to WATCH_CHUNKS. The clip has no pause longer than ~0.5 s, so an uncleared buffer would fail.
CLOSE_WITHIN, WATCH_FRAMES = 30, 60
QUIET_WITHIN, WATCH_CHUNKS = 100, 150
CLOSED = 0.1  # mouth opening read from the pixels (0 closed .. 1 wide open)
QUIET = 0.05  # audio level (viewer.sync.envelope_level: 0 is -50 dBFS or quieter)
LOUD, OPEN = 0.5, 0.4


def settles_at(values: np.ndarray, limit: float) -> int | None:
    """Index from which every value is below `limit` (None if the last one is not)."""
    above = np.flatnonzero(values >= limit)
    if above.size == 0:
        return 0
    last = int(above[-1]) + 1
    return last if last < values.size else None


def _interrupted(event: PlaybackEvent) -> bool:
    return isinstance(event, PlaybackFinished) and event.interrupted


async def test_clear_silences_the_viewer_and_closes_the_mouth(e2e: Harness) -> None:
    _, client = await e2e.gateway_client()
    session, viewer, _ = await e2e.watched_session(client)
    clip = speech_clip(CLIP_S)

    stream = await client.stream_audio(session.name, sample_rate=16000).open()
    log = EventLog(stream.events())
    try:
        for chunk in chunked(clip):  # the whole utterance is queued at the gateway; the segment stays open
            await stream.send(chunk)
        await log.wait_for(lambda e: isinstance(e, PlaybackStarted))
        # mid-utterance at the viewer: it has heard speech for a while and has seen the mouth open
        speech_from = len(viewer.rx.audio)
        await viewer.wait_until(
            lambda: sum(lv >= LOUD for _, lv in viewer.rx.audio[speech_from:]) >= HEARD_BEFORE_CLEAR
            and any(v.opening >= OPEN for v in viewer.rx.video[-30:]))

        await stream.clear()
        finished = await log.wait_for(_interrupted)
        frames_at, chunks_at = len(viewer.rx.video), len(viewer.rx.audio)
        await stream.close()
        events = await log.finish()
    finally:
        await log.aclose()
        stream.cancel()

    # accounting: exactly one finish for the segment, interrupted, part-way through the clip
    assert events == [PlaybackStarted(1), finished], events
    assert isinstance(finished, PlaybackFinished) and finished.segment_id == 1
    assert 0.0 < finished.position < CLIP_S

    # what the viewer receives next
    await viewer.wait_video_frames(WATCH_FRAMES, after=frames_at)
    await viewer.wait_audio_chunks(WATCH_CHUNKS, after=chunks_at)
    before = np.array([v.opening for v in viewer.rx.video[frames_at - 30 : frames_at]])
    after = np.array([v.opening for v in viewer.rx.video[frames_at : frames_at + WATCH_FRAMES]])
    levels = np.array([lv for _, lv in viewer.rx.audio[chunks_at : chunks_at + WATCH_CHUNKS]])
    print(f"\ninterrupted at {finished.position:.3f}s; mouth after clear: {np.round(after, 2).tolist()}\n"
          f"audio after clear: {np.round(levels, 2).tolist()}")
    assert before.max() >= OPEN, "the mouth was not moving before the clear: nothing was tested"
    closed_from = settles_at(after, CLOSED)
    assert closed_from is not None and closed_from <= CLOSE_WITHIN, (
        f"the mouth did not close and stay closed within {CLOSE_WITHIN} frames of the clear: {after.round(2)}")
    quiet_from = settles_at(levels, QUIET)
    assert quiet_from is not None and quiet_from <= QUIET_WITHIN, (
        f"the audio did not fall silent within {QUIET_WITHIN} chunks of the clear: {levels.round(2)}")

    # the session is still usable after the interrupt
    got = await client.get_session(session.name)
    assert got.state == session_pb2.SESSION_STATE_ACTIVE
