"""StartSession (mock) puts the right avatar participant in the room: identity, kind, attributes, tracks; seen by
the server (loopback state and RoomService) and by a viewer with the real livekit SDK."""

from __future__ import annotations

import pytest
from livekit import rtc
from livekit.protocol import models

from tests.e2e.e2e_helpers import AGENT, PROVIDER, Harness, avatar_identity_for, new_session_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXPECTED_ATTRIBUTES = {"lk.publish_on_behalf": AGENT, "lk.avatar_provider": PROVIDER}


async def test_avatar_participant_identity_kind_attributes_and_tracks(e2e: Harness) -> None:
    _, client = await e2e.gateway_client()
    sid = new_session_id()
    avatar = avatar_identity_for(sid)
    viewer = await e2e.viewer(avatar)

    session = await e2e.start_session(client, sid)
    assert session.avatar_identity == avatar
    assert session.name == f"sessions/{sid}"

    # -- the viewer's view (livekit.rtc)
    await e2e.watch(viewer)
    assert avatar in viewer.connected_identities
    remote = viewer.room.remote_participants[avatar]
    assert remote.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert {k: remote.attributes.get(k) for k in EXPECTED_ATTRIBUTES} == EXPECTED_ATTRIBUTES
    pubs = {pub.name: pub for pub in remote.track_publications.values()}
    assert set(pubs) == {"avatar_audio", "avatar_video"}
    assert pubs["avatar_audio"].source == rtc.TrackSource.SOURCE_MICROPHONE
    assert pubs["avatar_audio"].kind == rtc.TrackKind.KIND_AUDIO
    assert pubs["avatar_video"].source == rtc.TrackSource.SOURCE_CAMERA
    assert pubs["avatar_video"].kind == rtc.TrackKind.KIND_VIDEO
    assert all(pub.subscribed for pub in pubs.values())
    # a frame arrived at the session's default size
    first = viewer.rx.video[0]
    assert (first.width, first.height) == (640, 480)

    # -- the server's view (a server lists a track once its media flows, so this comes after the viewer's)
    if e2e.lk is not None:
        state = await e2e.lk.wait_for(lambda s: len(s.rooms[e2e.room].participants[avatar].tracks) == 2)
        p = state.participant(e2e.room, avatar)
        assert p is not None, f"avatar not in the room: {state.rooms}"
        assert p.kind == "AGENT"
        assert {k: p.attributes.get(k) for k in EXPECTED_ATTRIBUTES} == EXPECTED_ATTRIBUTES
        assert sorted((t.name, t.source, t.kind) for t in p.tracks.values()) == [
            ("avatar_audio", "MICROPHONE", "audio"), ("avatar_video", "CAMERA", "video")]
    listed = await e2e.participants()
    assert avatar in listed, f"RoomService does not list the avatar: {sorted(listed)}"
    info = listed[avatar]
    assert info.kind == models.ParticipantInfo.AGENT
    assert {k: info.attributes.get(k) for k in EXPECTED_ATTRIBUTES} == EXPECTED_ATTRIBUTES
    assert sorted((t.name, t.source, t.type) for t in info.tracks) == [
        ("avatar_audio", models.TrackSource.MICROPHONE, models.TrackType.AUDIO),
        ("avatar_video", models.TrackSource.CAMERA, models.TrackType.VIDEO)]
    # the gateway's token is tight: no subscribing, camera + microphone only
    assert not info.permission.can_subscribe
    assert sorted(info.permission.can_publish_sources) == sorted([models.TrackSource.CAMERA,
                                                                  models.TrackSource.MICROPHONE])

    ended = await client.end_session(session.name)
    assert ended.avatar_identity == avatar
    await e2e.assert_avatar_left(viewer, avatar)
