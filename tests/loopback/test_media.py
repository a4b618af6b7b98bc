"""Audio and video through the loopback server with the real SDK on both ends."""

from __future__ import annotations

import asyncio

from livekit import api, rtc

from loopback import LoopbackServer
from tests.loopback.loopback_helpers import (
    COLOR,
    HEIGHT,
    TONE_HZ,
    WIDTH,
    ConnectFn,
    feed_tone,
    feed_video,
    first_video_frames,
    mean_color,
    requires_netns,
    running,
    tone_stats,
)

pytestmark = requires_netns

MIC = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)


def camera(simulcast: bool = True) -> rtc.TrackPublishOptions:
    return rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=simulcast)


async def test_audio_and_video_reach_the_other_participant(
    server: LoopbackServer, connect: ConnectFn, signalling_path: str
) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    audio_src = rtc.AudioSource(48000, 1)
    video_src = rtc.VideoSource(WIDTH, HEIGHT)
    mic = rtc.LocalAudioTrack.create_audio_track("mic", audio_src)
    cam = rtc.LocalVideoTrack.create_video_track("cam", video_src)
    async with running(feed_tone(audio_src), feed_video(video_src)):
        mic_pub = await alice.local.publish_track(mic, MIC)
        cam_pub = await alice.local.publish_track(cam, camera(simulcast=False))
        _, audio_pub, _ = await bob.events.wait("track_subscribed", lambda t, p, who: p.sid == mic_pub.sid)
        (video_track, video_pub, who) = await bob.events.wait(
            "track_subscribed", lambda t, p, who: p.sid == cam_pub.sid
        )
        assert who.identity == "alice"
        assert audio_pub.source == rtc.TrackSource.SOURCE_MICROPHONE
        assert video_pub.source == rtc.TrackSource.SOURCE_CAMERA
        audio_track = bob.room.remote_participants["alice"].track_publications[mic_pub.sid].track
        assert audio_track is not None
        rms, peak = await tone_stats(audio_track)
        frames = await first_video_frames(video_track)
    assert rms > 1000, f"tone too quiet after the round trip: rms={rms:.0f}"
    assert abs(peak - TONE_HZ) < 15, f"dominant frequency {peak:.1f} Hz, sent {TONE_HZ} Hz"
    assert (frames[-1].width, frames[-1].height) == (WIDTH, HEIGHT)
    r, g, b = mean_color(frames[-1])
    assert abs(r - COLOR[0]) < 25 and abs(g - COLOR[1]) < 25 and abs(b - COLOR[2]) < 25, (r, g, b)
    state = server.state()
    alice_state = state.participant("room", "alice")
    bob_state = state.participant("room", "bob")
    assert alice_state is not None and bob_state is not None
    assert set(alice_state.tracks) == {mic_pub.sid, cam_pub.sid}
    assert set(bob_state.subscriptions) == {mic_pub.sid, cam_pub.sid}
    assert bob_state.single_pc == (signalling_path == "rtc_v1")


async def test_simulcast_video_and_late_joiner(connect: ConnectFn) -> None:
    """Default publish options (simulcast); a participant joining later gets the existing track."""
    alice = await connect("alice")
    video_src = rtc.VideoSource(WIDTH, HEIGHT)
    cam = rtc.LocalVideoTrack.create_video_track("cam", video_src)
    async with running(feed_video(video_src)):
        pub = await alice.local.publish_track(cam, camera())
        late = await connect("late")
        track, _, _ = await late.events.wait("track_subscribed", lambda t, p, who: p.sid == pub.sid)
        frames = await first_video_frames(track, count=3)
    assert frames[-1].width > 0 and frames[-1].height > 0
    assert frames[-1].width * HEIGHT == frames[-1].height * WIDTH  # one simulcast layer, same aspect


async def test_publish_without_rights_is_refused(server: LoopbackServer, connect: ConnectFn) -> None:
    viewer = await connect("viewer", grants=api.VideoGrants(room_join=True, room="room", can_publish=False))
    mic_only = await connect(
        "mic-only",
        grants=api.VideoGrants(room_join=True, room="room", can_publish_sources=["microphone"]),
    )
    audio_src = rtc.AudioSource(48000, 1)
    video_src = rtc.VideoSource(WIDTH, HEIGHT)
    refused_audio = viewer.local.publish_track(rtc.LocalAudioTrack.create_audio_track("a", audio_src), MIC)
    refused_cam = mic_only.local.publish_track(rtc.LocalVideoTrack.create_video_track("v", video_src), camera())
    allowed_mic = mic_only.local.publish_track(rtc.LocalAudioTrack.create_audio_track("m", audio_src), MIC)
    results = await asyncio.gather(refused_audio, refused_cam, allowed_mic, return_exceptions=True)
    assert isinstance(results[0], rtc.participant.PublishTrackError), results[0]
    assert isinstance(results[1], rtc.participant.PublishTrackError), results[1]
    assert isinstance(results[2], rtc.LocalTrackPublication), results[2]
    state = server.state()
    viewer_state = state.participant("room", "viewer")
    mic_state = state.participant("room", "mic-only")
    assert viewer_state is not None and not viewer_state.tracks
    assert mic_state is not None and [t.source for t in mic_state.tracks.values()] == ["MICROPHONE"]


async def test_can_subscribe_false_gets_no_subscriptions(server: LoopbackServer, connect: ConnectFn) -> None:
    deaf = await connect("deaf", grants=api.VideoGrants(room_join=True, room="room", can_subscribe=False))
    listener = await connect("listener")
    speaker = await connect("speaker")
    audio_src = rtc.AudioSource(48000, 1)
    async with running(feed_tone(audio_src)):
        pub = await speaker.local.publish_track(rtc.LocalAudioTrack.create_audio_track("m", audio_src), MIC)
        await listener.events.wait("track_subscribed", lambda t, p, who: p.sid == pub.sid)
        await deaf.events.wait("track_published", lambda p, who: p.sid == pub.sid)
    state = server.state()
    deaf_state = state.participant("room", "deaf")
    listener_state = state.participant("room", "listener")
    assert deaf_state is not None and deaf_state.subscriptions == ()
    assert listener_state is not None and listener_state.subscriptions == (pub.sid,)
    assert not [e for e, _ in deaf.events.log if e == "track_subscribed"]


async def test_mute_unpublish_and_leave_events(server: LoopbackServer, connect: ConnectFn) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    audio_src = rtc.AudioSource(48000, 1)
    mic = rtc.LocalAudioTrack.create_audio_track("mic", audio_src)
    async with running(feed_tone(audio_src)):
        pub = await alice.local.publish_track(mic, MIC)
        await bob.events.wait("track_subscribed", lambda t, p, who: p.sid == pub.sid)
        mic.mute()
        await bob.events.wait("track_muted", lambda who, p: p.sid == pub.sid)
        state = await server.wait_for(lambda s: s.rooms["room"].participants["alice"].tracks[pub.sid].muted)
        mic.unmute()
        await bob.events.wait("track_unmuted", lambda who, p: p.sid == pub.sid)
        await alice.local.unpublish_track(pub.sid)
        await bob.events.wait("track_unsubscribed", lambda t, p, who: p.sid == pub.sid)
        await bob.events.wait("track_unpublished", lambda p, who: p.sid == pub.sid)
        state = await server.wait_for(lambda s: not s.rooms["room"].participants["alice"].tracks)
        bob_state = state.participant("room", "bob")
        assert bob_state is not None and bob_state.subscriptions == ()
    await alice.room.disconnect()
    await bob.events.wait("participant_disconnected", lambda who: who.identity == "alice")
    state = await server.wait_for(lambda s: set(s.rooms["room"].participants) == {"bob"})
    assert state.peer_connections == 1
