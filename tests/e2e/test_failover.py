"""StartSession with fallbacks: a provider that is unavailable or at its quota gives way to the next, the agent is
told, and nothing of the provider passed over is left running."""

from __future__ import annotations

import grpc
import pytest
from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import session_pb2

from agent_client import PlaybackFinished, StreamWarning
from agent_client.errors import GatewayError
from fakes.room_native import FakeVendors
from tests.e2e.e2e_helpers import EventLog, Harness, avatar_identity_for, chunked, new_session_id, speech_clip
from tests.e2e.room_native_helpers import vendor_registry

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUOTA = (400, {"message": "User has reached maximum concurrent conversations"})


async def test_a_provider_at_its_quota_gives_way_to_the_next(e2e: Harness, vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.fail_next["tavus"] = QUOTA
    session_id = new_session_id()
    viewer = await e2e.viewer(avatar_identity_for(session_id, "bey"))
    session = await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1",
                                      fallbacks=[pb.ProviderChoice(provider="bey", avatar_id="bey-face")])
    await e2e.watch(viewer)
    assert session.provider == "bey" and session.avatar_identity == avatar_identity_for(session_id, "bey")
    assert [(f.provider, f.reason) for f in session.failovers] == [("tavus", "PROVIDER_QUOTA")]
    (running,) = vendors.running()
    assert running.vendor == "bey" and running.body["_avatar"] == "bey-face"

    async with client.stream_audio(session.name, sample_rate=16000) as stream:
        log = EventLog(stream.events())
        try:
            for chunk in chunked(speech_clip(0.5)):
                await stream.send(chunk)
            await stream.end_segment()
            await log.wait_for(lambda e: isinstance(e, PlaybackFinished))
        finally:
            await log.aclose()
    warning = log.events[0]
    assert isinstance(warning, StreamWarning) and warning.reason == "PROVIDER_FAILOVER"
    assert "tavus" in warning.message and "PROVIDER_QUOTA" in warning.message
    assert [e for e in log.events if isinstance(e, StreamWarning)] == [warning]  # told once
    await client.end_session(session.name)


async def test_a_refusal_another_provider_would_share_is_not_failed_over(e2e: Harness,
                                                                        vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.fail_next["anam"] = (422, {"message": "unknown avatarId"})
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, new_session_id(), provider="anam", avatar_id="nope",
                                fallbacks=[pb.ProviderChoice(provider="bey", avatar_id="b")])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [s.vendor for s in vendors.sessions.values()] == []  # bey was never asked


async def test_when_every_provider_fails_the_last_error_is_the_answer(e2e: Harness, vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.fail_next["tavus"] = QUOTA
    vendors.fail_next["bey"] = (503, {"message": "down"})
    session_id = new_session_id()
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1",
                                fallbacks=[pb.ProviderChoice(provider="bey", avatar_id="b")])
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.retry_after is not None
    failed = await client.get_session(f"sessions/{session_id}")
    assert failed.provider == "bey" and [f.provider for f in failed.failovers] == ["tavus"]


async def test_fallbacks_are_validated_before_anything_starts(e2e: Harness, vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, new_session_id(), provider="tavus", avatar_id="face-1",
                                fallbacks=[pb.ProviderChoice(provider="nope")])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations == ["fallbacks[0].provider"]
    with pytest.raises(GatewayError) as caught:
        await e2e.start_session(client, new_session_id(), provider="tavus", avatar_id="face-1",
                                fallbacks=[pb.ProviderChoice(provider="bey", avatar_id="b")] * 5)
    assert caught.value.reason == "TOO_MANY_FALLBACKS"
    with pytest.raises(GatewayError) as caught:  # bey needs an avatar_id: refused as if asked for itself
        await e2e.start_session(client, new_session_id(), provider="tavus", avatar_id="face-1",
                                fallbacks=[pb.ProviderChoice(provider="bey")])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert vendors.sessions == {}


async def test_a_failed_start_leaves_its_name_free_for_the_caller_s_retry(e2e: Harness,
                                                                         vendors: FakeVendors) -> None:
    _, client = await e2e.gateway_client(vendor_registry(vendors))
    vendors.fail_next["tavus"] = QUOTA
    session_id = new_session_id()
    with pytest.raises(GatewayError):
        await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1")
    failed = await client.get_session(f"sessions/{session_id}")  # kept to be read
    assert failed.end_reason == session_pb2.END_REASON_START_FAILED
    viewer = await e2e.viewer(avatar_identity_for(session_id, "tavus"))
    session = await e2e.start_session(client, session_id, provider="tavus", avatar_id="face-1")
    await e2e.watch(viewer)
    assert session.state == session_pb2.SESSION_STATE_ACTIVE
    await client.end_session(session.name)
