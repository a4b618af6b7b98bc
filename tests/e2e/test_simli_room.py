"""Simli's media in the room: the real simli-ai client against the fake Simli, the gateway republishing what Simli
sends back, a viewer in the loopback room. The avatar participant is the gateway's (identity, kind, attributes), the
viewer hears Simli's audio with the clip's envelope, the lips (read from the pixels Simli rendered) follow the voice,
and EndSession makes the avatar leave and stops the Simli session. The fake Simli runs in a process of its own, as the
real one is remote."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc

from agent_client import PlaybackEvent, PlaybackFinished, PlaybackStarted, StreamWarning
from fakes.simli.process import FakeSimliProcess
from gateway.config import GatewayConfig
from loopback import loopback_host
from providers.registry import build_registry
from tests.e2e.e2e_helpers import (
    AGENT,
    LIGHT_VIDEO,
    TIMEOUT,
    Harness,
    LiveKitTarget,
    LoopStalls,
    aligned_correlation,
    avatar_identity_for,
    chunked,
    envelope,
    new_session_id,
    speech_clip,
)
from tests.simli.conftest import FACE, KEY
from viewer.sync import av_offset

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIP_S = 5.0
TAIL_CHUNKS = 80
TAIL_FRAMES = 24
MAX_ATTEMPTS = 3
STALL_LIMIT_S = GatewayConfig.lead_ms / 1000


@pytest_asyncio.fixture(loop_scope="session")
async def fake_simli() -> AsyncIterator[FakeSimliProcess]:
    """The fake Simli in its own process, as the real one is remote (its media encoding is not this process's)."""
    # a 256x256 face at 25 fps (Simli's older faces are 512x512 at 25-30): the machine also runs the loopback
    # server, the gateway and the viewer
    async with FakeSimliProcess.start(loopback_host(), keys=(KEY,), faces=(FACE,), width=256, height=256,
                                      fps=25) as fake:
        yield fake
        assert (await fake.state(open_sessions=0, timeout=TIMEOUT))["open_sessions"] == 0


@dataclasses.dataclass(frozen=True)
class SimliRun:
    """One clip spoken through a Simli session to a viewer."""

    events: list[PlaybackEvent]
    underruns: int
    audio: list[tuple[float, float]]
    video: list[tuple[float, float]]
    stall_s: float


async def _speak_once(target: LiveKitTarget, fake: FakeSimliProcess, clip: np.ndarray) -> SimliRun:
    async with Harness.open(target, "simli-speech") as e2e:
        _, client = await e2e.gateway_client(build_registry({"SIMLI_API_KEY": KEY, "SIMLI_FACE_ID": FACE,
                                                             "SIMLI_URL": fake.url}))
        sid = new_session_id()
        avatar = avatar_identity_for(sid, "simli")
        viewer = await e2e.viewer(avatar)
        session = await e2e.start_session(client, sid, provider="simli", **LIGHT_VIDEO)
        assert session.avatar_identity == avatar
        await e2e.watch(viewer)
        participant = viewer.room.remote_participants[avatar]
        assert participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert participant.attributes == {"lk.publish_on_behalf": AGENT, "lk.avatar_provider": "simli"}
        async with LoopStalls() as stalls, asyncio.timeout(CLIP_S + TIMEOUT):
            async with client.stream_audio(session.name, sample_rate=16000) as stream:
                # 100 ms chunks: this process's loop is shared by the room's media; the agent is not under test
                for chunk in chunked(clip, ms=100):
                    await stream.send(chunk)
                await stream.end_segment()
            events = [event async for event in stream]
            await viewer.wait_audio_chunks(TAIL_CHUNKS, after=len(viewer.rx.audio))
            await viewer.wait_video_frames(TAIL_FRAMES, after=len(viewer.rx.video))
        await client.end_session(session.name)
        await e2e.assert_avatar_left(viewer, avatar)
        state = await fake.state(open_sessions=0, timeout=TIMEOUT)
        assert state["open_sessions"] == 0 and state["sessions"][-1]["stop_cause"] == "DONE"
        underruns = sum(isinstance(e, StreamWarning) for e in events)
        return SimliRun([e for e in events if not isinstance(e, StreamWarning)], underruns, list(viewer.rx.audio),
                        viewer.rx.lips(), stalls.worst)


async def test_simli_speaks_in_the_room_in_sync(livekit_target: LiveKitTarget, fake_simli: FakeSimliProcess,
                                                record_property: Callable[[str, object], None]) -> None:
    """A run during which this process's event loop stalled for longer than the gateway's audio lead is repeated
    (up to MAX_ATTEMPTS runs; the least disturbed one is judged): the test judges the gateway, not the machine."""
    clip = speech_clip(CLIP_S)
    runs: list[SimliRun] = []
    for _ in range(MAX_ATTEMPTS):
        runs.append(await _speak_once(livekit_target, fake_simli, clip))
        if runs[-1].stall_s < STALL_LIMIT_S:
            break
    run = min(runs, key=lambda r: r.stall_s)
    context = (f"(worst event-loop stall {run.stall_s * 1000:.0f} ms of attempts "
               f"{[round(r.stall_s * 1000) for r in runs]} ms; {run.underruns} underrun warnings)")
    assert [type(e) for e in run.events] == [PlaybackStarted, PlaybackFinished], run.events
    finished = run.events[1]
    assert isinstance(finished, PlaybackFinished) and not finished.interrupted
    # what was heard: all of it, unless a stall left a backlog the framer dropped rather than delay every later word
    assert CLIP_S - 0.5 < finished.position <= CLIP_S + 1e-3, context

    received = np.array([level for _, level in run.audio])
    corr, _, _, _ = aligned_correlation(envelope(clip), received)
    offset, lips = av_offset(run.video, run.audio)
    record_property("envelope_correlation", round(corr, 3))
    record_property("av_offset_ms", round(offset * 1000))
    record_property("av_correlation", round(lips, 3))
    print(f"\nsimli: envelope correlation {corr:.3f}, A/V offset {offset * 1000:+.0f} ms, lips {lips:.3f} {context}")
    assert corr > 0.8, f"the viewer does not hear Simli's audio of the clip (correlation {corr:.3f}) {context}"
    assert max(o for _, o in run.video) > 0.5, "the mouth Simli rendered never opened at the viewer"
    assert lips > 0.5, f"the lips do not follow the voice (correlation {lips:.3f}) {context}"
    # a sanity bound, not a sync requirement (see the recorded av_offset_ms and BENCHMARKS.md)
    assert abs(offset) < 0.4, f"A/V offset {offset * 1000:.0f} ms {context}"
