"""A smoke test against the real Simli: runs only when SIMLI_API_KEY and SIMLI_FACE_ID are set (and says so when
it is skipped). A headless gateway configured from the environment starts a Simli session, speaks two seconds of
the bundled clip, gets exactly one playback_finished, and ends the session."""

from __future__ import annotations

import os

import pytest

from agent_client import AvatarGatewayClient, PlaybackFinished, PlaybackStarted, StreamWarning
from providers.registry import build_registry
from tests.e2e.e2e_helpers import chunked, speech_clip
from tests.simli.conftest import MakeGateway

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not (os.environ.get("SIMLI_API_KEY") and os.environ.get("SIMLI_FACE_ID")),
                       reason="SIMLI_API_KEY and SIMLI_FACE_ID are not set: the live Simli smoke test is skipped"),
]
CLIP_S = 2.0


async def test_a_real_simli_session_speaks_and_ends(make_gateway: MakeGateway) -> None:
    server = await make_gateway(registry=build_registry(os.environ), start_timeout_s=30.0)
    async with AvatarGatewayClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        [simli] = [p for p in await client.list_providers() if p.name == "simli"]
        assert simli.enabled, simli.disabled_reason
        session = await client.start_session("simli", room_name="live-smoke", agent_identity="agent-1")
        try:
            async with client.stream_audio(session.name, sample_rate=16000) as stream:
                for chunk in chunked(speech_clip(CLIP_S)):
                    await stream.send(chunk)
                await stream.end_segment()
            events = [e for e in [e async for e in stream] if not isinstance(e, StreamWarning)]
        finally:
            ended = await client.end_session(session.name)
    assert [type(e) for e in events] == [PlaybackStarted, PlaybackFinished], events
    finished = events[1]
    assert isinstance(finished, PlaybackFinished) and not finished.interrupted
    assert 0 < finished.position <= CLIP_S + 0.05
    assert ended.state == 4 and ended.stats.segments_finished == 1
