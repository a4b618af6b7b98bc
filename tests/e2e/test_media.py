"""Speech in over StreamAudio, avatar out at a viewer: the audio envelope survives, playback events are right, and
the lips follow the voice (A/V offset measured from the pixels, recorded, only loosely bounded).

One speech run per video_delay setting is shared by the tests of this module (module-scoped fixture). Video is
320x240 (LIGHT_VIDEO) to keep the shared event loop responsive.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import pytest_asyncio

from agent_client import PlaybackEvent, PlaybackFinished, PlaybackStarted
from gateway.config import GatewayConfig
from tests.e2e.e2e_helpers import (
    LEVEL_CHUNK_S,
    LIGHT_VIDEO,
    TIMEOUT,
    Harness,
    LiveKitTarget,
    LoopStalls,
    ObservedViewer,
    aligned_correlation,
    avatar_identity_for,
    chunked,
    envelope,
    new_session_id,
    speech_clip,
)
from viewer.mp4 import AUDIO_RATE
from viewer.participant import VideoSample
from viewer.sync import av_offset

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIP_S = 6.0
# what the viewer must receive after the gateway says the clip finished: the relay's latency is ~0.2 s
TAIL_CHUNKS = 80  # 10 ms audio chunks
TAIL_FRAMES = 24  # video frames at 30 fps
MAX_ATTEMPTS = 3
STALL_LIMIT_S = GatewayConfig.lead_ms / 1000  # a longer stall empties the gateway's audio queue


@dataclasses.dataclass(frozen=True)
class SpeechRun:
    """What one streamed clip produced."""

    video_delay: float | None
    clip: np.ndarray
    events: list[PlaybackEvent]
    video: list[VideoSample]
    audio: list[tuple[float, float]]
    audio_samples: int
    stall_s: float  # worst event-loop stall during the run (see LoopStalls)
    attempts: list[float]  # worst stall of every attempt made

    def context(self) -> str:
        return (f"(worst event-loop stall {self.stall_s * 1000:.0f} ms; stalls of the attempts: "
                f"{[round(a * 1000) for a in self.attempts]} ms)")


async def _stream_clip(target: LiveKitTarget, label: str, video_delay: float | None, clip: np.ndarray
                       ) -> tuple[list[PlaybackEvent], ObservedViewer, float]:
    async with Harness.open(target, label) as e2e:
        _, client = await e2e.gateway_client()
        sid = new_session_id()
        viewer = await e2e.viewer(avatar_identity_for(sid))
        session = await e2e.start_session(client, sid, video_delay=video_delay, **LIGHT_VIDEO)
        await e2e.watch(viewer)
        async with LoopStalls() as stalls, asyncio.timeout(CLIP_S + TIMEOUT):
            async with client.stream_audio(session.name, sample_rate=16000) as stream:
                for chunk in chunked(clip):
                    await stream.send(chunk)
                await stream.end_segment()
            events = [event async for event in stream]  # ends once the segment has finished (half-closed)
            # let the end of the clip (and some silence) reach the viewer
            await viewer.wait_audio_chunks(TAIL_CHUNKS, after=len(viewer.rx.audio))
            await viewer.wait_video_frames(TAIL_FRAMES, after=len(viewer.rx.video))
        await client.end_session(session.name)
    return events, viewer, stalls.worst


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=[None, 0.1],
                        ids=["video_delay-default", "video_delay-100ms"])
async def speech_run(livekit_target: LiveKitTarget, request: pytest.FixtureRequest) -> SpeechRun:
    """Stream CLIP_S seconds of examples/assets/speech.wav through a mock session to a viewer.

    A run during which this process's event loop stalled for longer than the gateway's audio lead is repeated
    (up to MAX_ATTEMPTS runs; the least disturbed one is used): the tests judge the gateway, not the machine.
    """
    video_delay: float | None = request.param
    clip = speech_clip(CLIP_S)
    best: tuple[list[PlaybackEvent], ObservedViewer, float] | None = None
    attempts: list[float] = []
    for _ in range(MAX_ATTEMPTS):
        run = await _stream_clip(livekit_target, f"speech-{request.node.name}", video_delay, clip)
        attempts.append(run[2])
        if best is None or run[2] < best[2]:
            best = run
        if run[2] < STALL_LIMIT_S:
            break
    assert best is not None
    events, viewer, stall = best
    return SpeechRun(video_delay, clip, events, list(viewer.rx.video), list(viewer.rx.audio),
                     viewer.rx.audio_samples, stall, attempts)


async def test_playback_events_in_order_finished_once_at_clip_length(speech_run: SpeechRun) -> None:
    events = speech_run.events
    # exactly: started, then finished once, not interrupted, at the clip's length (no warnings, nothing else)
    assert [type(e) for e in events] == [PlaybackStarted, PlaybackFinished], events
    started, finished = events
    assert started == PlaybackStarted(1)
    assert isinstance(finished, PlaybackFinished)
    assert finished.segment_id == 1 and not finished.interrupted
    assert finished.position == pytest.approx(CLIP_S, abs=1e-3)  # one 24 kHz sample is 42 us


async def test_viewer_hears_the_clip_with_its_envelope(speech_run: SpeechRun,
                                                       record_property: Callable[[str, object], None]) -> None:
    received = np.array([level for _, level in speech_run.audio])
    # the viewer's levels are per 10 ms chunk: check that, so an index is 10 ms of audio
    assert speech_run.audio_samples == pytest.approx(len(speech_run.audio) * AUDIO_RATE * LEVEL_CHUNK_S, rel=0.01)
    sent = envelope(speech_run.clip)
    corr, lag, global_corr, block_lags = aligned_correlation(sent, received)
    record_property("envelope_correlation", round(corr, 3))
    record_property("envelope_correlation_single_lag", round(global_corr, 3))
    print(f"\nvideo_delay={speech_run.video_delay}: envelope correlation {corr:.3f} (single lag: {global_corr:.3f} "
          f"at chunk {lag}; per-second drift in 10 ms chunks: {block_lags})")
    assert corr > 0.8, (f"the received audio does not follow the sent clip's envelope (correlation {corr:.3f}) "
                        f"{speech_run.context()}")
    # the clip is really there, at about its loudness (Opus changes levels a little), and after the viewer's audio
    # began (it was subscribed, receiving the idle avatar's silence, before any speech was sent)
    window = received[lag : lag + sent.size]
    print(f"mean level sent {sent.mean():.3f}, received {window.mean():.3f}")
    assert window.max() > 0.5
    assert abs(float(window.mean()) - float(sent.mean())) < 0.15
    assert lag > 0


async def test_lips_follow_the_voice_at_the_viewer(speech_run: SpeechRun,
                                                   record_property: Callable[[str, object], None]) -> None:
    video = [(v.shown, v.opening) for v in speech_run.video]
    offset, corr = av_offset(video, speech_run.audio)
    offset_ms = round(offset * 1000)
    record_property("av_offset_ms", offset_ms)
    record_property("av_correlation", round(corr, 3))
    print(f"\nvideo_delay={speech_run.video_delay}: A/V offset {offset_ms:+d} ms (positive: video lags), "
          f"correlation {corr:.3f} {speech_run.context()}")
    # the mouth opens and closes with the voice...
    assert max(o for _, o in video) > 0.5
    assert corr > 0.5, f"mouth opening does not follow the audio (peak correlation {corr:.3f}) {speech_run.context()}"
    # ...at roughly the same time (a sanity bound, not a sync requirement: see the recorded av_offset_ms)
    assert abs(offset) < 0.4, f"A/V offset {offset_ms} ms {speech_run.context()}"
