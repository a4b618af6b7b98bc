"""The loopback server forwards like an SFU, checked with the real SDK on both ends and the server's side of the
wire tapped (plaintext RTP/RTCP, see WireTap): payloads untouched on the subscriber's own SSRC and payload type,
keyframe requests relayed to the publisher, the publisher's sender reports translated, one media stream for a
participant's camera and microphone.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpSrPacket
from livekit import rtc

from loopback import DowntrackState, LoopbackServer, ServerState, TrackState
from tests.loopback.loopback_helpers import (
    HEIGHT,
    WIDTH,
    Client,
    ConnectFn,
    WireTap,
    feed_tone,
    feed_video,
    first_video_frames,
    msids,
    ntp_to_unix_ms,
    requires_netns,
    rtpmap,
    running,
)

pytestmark = requires_netns

MIC = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
CAMERA = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)


class Publishing:
    """alice's microphone and camera, fed for the duration of an ``async with``; publish both (the SDK's audio
    capture thread spins, and dropping its AudioSource hangs, when a fed source has no published track)."""

    def __init__(self) -> None:
        self.audio = rtc.AudioSource(48000, 1)
        self.video = rtc.VideoSource(WIDTH, HEIGHT)
        self.mic = rtc.LocalAudioTrack.create_audio_track("mic", self.audio)
        self.cam = rtc.LocalVideoTrack.create_video_track("cam", self.video)
        self._feeding = running(feed_tone(self.audio), feed_video(self.video))

    async def __aenter__(self) -> Publishing:
        await self._feeding.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._feeding.__aexit__(None, None, None)

    async def publish(self, client: Client) -> tuple[str, str]:
        mic = await client.local.publish_track(self.mic, MIC)
        cam = await client.local.publish_track(self.cam, CAMERA)
        return mic.sid, cam.sid


def _tracks(state: ServerState, identity: str) -> dict[str, TrackState]:
    p = state.participant("room", identity)
    return dict(p.tracks) if p else {}


def _downtracks(state: ServerState, identity: str) -> dict[str, DowntrackState]:
    p = state.participant("room", identity)
    return dict(p.downtracks) if p else {}


async def _subscribed(server: LoopbackServer, who: str, sids: tuple[str, ...]) -> ServerState:
    """Until ``who`` receives packets of each of ``sids``."""
    return await server.wait_for(
        lambda s: all((d := _downtracks(s, who).get(sid)) is not None and d.packets_sent > 0 for sid in sids)
    )


def _origins(tap: WireTap, publisher_ssrc: int, sent: list[Any]) -> list[Any]:
    """For every packet sent to a subscriber, the publisher's packet it was forwarded from (its original, or the
    original a retransmission of the publisher carried), matched by sequence number from the first one's offset."""
    received = tap.received_on(publisher_ssrc)
    by_payload = {p.payload: p for p in received}
    first = by_payload[sent[0].payload]
    offset = (sent[0].sequence_number - first.sequence_number) & 0xFFFF
    by_seq = {p.sequence_number: p for p in received}
    repaired = {p.payload[2:]: p for p in tap.rtp_received if p.ssrc != publisher_ssrc and len(p.payload) > 2}
    origins = []
    for packet in sent:
        origin = by_seq.get((packet.sequence_number - offset) & 0xFFFF)
        if origin is None:  # came as RTX: same payload, after its 2-byte original sequence number
            origin = repaired[packet.payload]
            assert int.from_bytes(origin.payload[:2], "big") == (packet.sequence_number - offset) & 0xFFFF
        origins.append(origin)
    return origins


async def test_subscriber_gets_the_publishers_rtp_payloads_on_its_own_ssrc_and_payload_type(
    server: LoopbackServer, connect: ConnectFn, signalling_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = WireTap(monkeypatch)
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        mic_sid, cam_sid = await media.publish(alice)
        state = await _subscribed(server, "bob", (mic_sid, cam_sid))
        published, downtracks = _tracks(state, "alice"), _downtracks(state, "bob")
        await tap.wait(lambda: all(len(tap.sent_on(d.ssrc)) >= 60 for d in downtracks.values()))
        (video, _, _) = await bob.events.wait("track_subscribed", lambda t, p, who: p.sid == cam_sid)
        frames = await first_video_frames(video, count=3)
    assert frames[-1].width == WIDTH
    bob_sdp = server.manager.rooms["room"].participants["bob"].rtc.subscriber_sdp  # type: ignore[union-attr]
    for sid, codec in ((mic_sid, "opus/48000/2"), (cam_sid, "VP8/90000")):
        track, downtrack = published[sid], downtracks[sid]
        assert track.ssrc is not None and downtrack.ssrc is not None and downtrack.mid is not None
        sent = tap.sent_on(downtrack.ssrc)
        origins = _origins(tap, track.ssrc, sent)
        assert [p.payload for p in sent] == [o.payload for o in origins]  # the payload bytes, untouched
        assert [p.marker for p in sent] == [o.marker for o in origins]
        assert len({(p.timestamp - o.timestamp) & 0xFFFFFFFF for p, o in zip(sent, origins, strict=True)}) == 1
        assert downtrack.ssrc != track.ssrc
        (pt,) = {p.payload_type for p in sent}
        assert rtpmap(bob_sdp, downtrack.mid)[pt] == codec  # the number bob's section gives the codec
        (publisher_pt,) = {o.payload_type for o in origins if o.ssrc == track.ssrc}
        if signalling_path == "rtc_fallback":  # the server offered: aiortc's own payload numbers
            assert pt != publisher_pt
    assert {t.mime_type for t in published.values()} == {"audio/opus", "video/vp8"}


async def _outbound(track: rtc.LocalVideoTrack) -> tuple[int, int]:
    """(PLIs received, keyframes encoded) of the publisher's video sender (summed over simulcast layers)."""
    stats = [s.outbound_rtp.outbound for s in await track.get_stats() if s.WhichOneof("stats") == "outbound_rtp"]
    return sum(s.pli_count for s in stats), sum(s.key_frames_encoded for s in stats)


async def _inbound(track: rtc.Track) -> Any:
    (inbound,) = [s.inbound_rtp.inbound for s in await track.get_stats() if s.WhichOneof("stats") == "inbound_rtp"]
    return inbound


async def test_late_subscriber_gets_a_keyframe_through_its_relayed_pli(
    server: LoopbackServer, connect: ConnectFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = WireTap(monkeypatch)
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        _, cam_sid = await media.publish(alice)
        (bob_video, _, _) = await bob.events.wait("track_subscribed", lambda t, p, who: p.sid == cam_sid)
        await first_video_frames(bob_video, count=30)  # the stream is steady: keyframes only on request now
        before = _tracks(server.state(), "alice")[cam_sid]
        plis_before, keyframes_before = await _outbound(media.cam)

        late = await connect("late")
        (late_video, _, _) = await late.events.wait("track_subscribed", lambda t, p, who: p.sid == cam_sid)
        frames = await first_video_frames(late_video, count=3)
        state = await server.wait_for(
            lambda s: _tracks(s, "alice")[cam_sid].keyframes_received > before.keyframes_received
        )
        plis_after, keyframes_after = await _outbound(media.cam)
        late_inbound = await _inbound(late_video)
    assert frames[-1].width == WIDTH
    downtrack = _downtracks(state, "late")[cam_sid]
    track = _tracks(state, "alice")[cam_sid]
    # the late subscriber started on a delta frame, asked for a keyframe and decoded from the one it got
    assert downtrack.first_frame_keyframe is False
    assert downtrack.keyframe_requests >= 1 and late_inbound.pli_count >= 1
    assert late_inbound.key_frames_decoded >= 1
    # the server asked the publisher, whose encoder made one
    assert track.keyframe_requests_sent > before.keyframe_requests_sent
    relayed = [p for p in tap.rtcp_sent if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI
               and p.media_ssrc == track.ssrc]
    assert len(relayed) >= track.keyframe_requests_sent
    assert plis_after > plis_before and keyframes_after > keyframes_before


async def test_sender_reports_reach_subscribers_with_the_publishers_ntp_mapping(
    server: LoopbackServer, connect: ConnectFn, signalling_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = WireTap(monkeypatch)
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        mic_sid, cam_sid = await media.publish(alice)
        # libwebrtc reports every second for video, every 5 s for audio
        state = await server.wait_for(
            lambda s: all(
                (d := _downtracks(s, "bob").get(sid)) is not None and d.sender_reports_sent >= 1
                for sid in (mic_sid, cam_sid)
            ),
            timeout=30,
        )
        remote = bob.room.remote_participants["alice"].track_publications
        stats = {sid: await remote[sid].track.get_stats() for sid in (mic_sid, cam_sid)}  # type: ignore[union-attr]
    published, downtracks = _tracks(state, "alice"), _downtracks(state, "bob")
    for sid in (mic_sid, cam_sid):
        track, downtrack = published[sid], downtracks[sid]
        from_publisher = {p.sender_info.ntp_timestamp: p.sender_info.rtp_timestamp for p in tap.rtcp_received
                          if isinstance(p, RtcpSrPacket) and p.ssrc == track.ssrc}
        to_bob = [p for p in tap.rtcp_sent if isinstance(p, RtcpSrPacket) and p.ssrc == downtrack.ssrc]
        assert to_bob and from_publisher
        sent = tap.sent_on(downtrack.ssrc)
        (ts_offset,) = {(p.timestamp - o.timestamp) & 0xFFFFFFFF
                        for p, o in zip(sent, _origins(tap, track.ssrc or 0, sent), strict=True)}
        for report in to_bob:
            # the publisher's own NTP time, and its RTP time moved to bob's timestamp base
            publisher_rtp = from_publisher[report.sender_info.ntp_timestamp]
            assert report.sender_info.rtp_timestamp == (publisher_rtp + ts_offset) & 0xFFFFFFFF
        # bob's WebRTC stack took it: the last report it has is one of the publisher's
        (remote_outbound,) = [s.remote_outbound_rtp.remote_outbound for s in stats[sid]
                              if s.WhichOneof("stats") == "remote_outbound_rtp"]
        assert remote_outbound.reports_sent >= 1
        assert min(abs(remote_outbound.remote_timestamp - ntp_to_unix_ms(ntp)) for ntp in from_publisher) < 0.01


async def test_a_publishers_second_video_track_reaches_subscribers(
    server: LoopbackServer, connect: ConnectFn, signalling_path: str
) -> None:
    """Camera and screen share: two VP8 sections of one publisher, and two video sections at the subscriber, whose
    second one aiortc put on a transport of its own unless told to bundle everything (RTCBundlePolicy.MAX_BUNDLE)."""
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        _, cam_sid = await media.publish(alice)
        screen = await alice.local.publish_track(
            rtc.LocalVideoTrack.create_video_track("screen", media.video),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE),
        )
        frames = {}
        for sid in (cam_sid, screen.sid):
            (track, _, _) = await bob.events.wait("track_subscribed", lambda t, p, who, sid=sid: p.sid == sid)
            frames[sid] = await first_video_frames(track, count=3)
    assert {sid: f[-1].width for sid, f in frames.items()} == {cam_sid: WIDTH, screen.sid: WIDTH}
    assert {t.packets_received > 0 for t in _tracks(server.state(), "alice").values()} == {True}


async def test_a_participants_microphone_and_camera_share_one_media_stream(
    server: LoopbackServer, connect: ConnectFn, signalling_path: str
) -> None:
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        mic_sid, cam_sid = await media.publish(alice)
        screen = await alice.local.publish_track(
            rtc.LocalVideoTrack.create_video_track("screen", media.video),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE),
        )
        for sid in (mic_sid, cam_sid, screen.sid):
            await bob.events.wait("track_subscribed", lambda t, p, who, sid=sid: p.sid == sid)
        state = await _subscribed(server, "bob", (mic_sid, cam_sid, screen.sid))
    alice_sid = alice.local.sid
    downtracks = _downtracks(state, "bob")
    assert {sid: d.stream_id for sid, d in downtracks.items()} == {
        mic_sid: f"{alice_sid}|camera",
        cam_sid: f"{alice_sid}|camera",
        screen.sid: f"{alice_sid}|screen",
    }
    assert {t.stream for t in _tracks(state, "alice").values()} == {"camera", "screen"}
    # what bob's SDP says (a=msid:<stream> <track>), and the SDK still matched each track to its publication
    bob_sdp = server.manager.rooms["room"].participants["bob"].rtc.subscriber_sdp  # type: ignore[union-attr]
    sections = msids(bob_sdp)
    assert {sid: sections[d.mid or ""] for sid, d in downtracks.items()} == {
        sid: (d.stream_id, sid) for sid, d in downtracks.items()
    }
    remote = bob.room.remote_participants["alice"].track_publications
    assert {sid for sid, pub in remote.items() if pub.track is not None} == {mic_sid, cam_sid, screen.sid}


async def test_without_sync_streams_every_track_has_a_stream_of_its_own(
    server: LoopbackServer, connect: ConnectFn
) -> None:
    server.manager.sync_streams = False
    alice = await connect("alice")
    bob = await connect("bob")
    async with Publishing() as media:
        mic_sid, cam_sid = await media.publish(alice)
        for sid in (mic_sid, cam_sid):
            await bob.events.wait("track_subscribed", lambda t, p, who, sid=sid: p.sid == sid)
        state = await _subscribed(server, "bob", (mic_sid, cam_sid))
    assert {sid: d.stream_id for sid, d in _downtracks(state, "bob").items()} == {
        mic_sid: f"{alice.local.sid}|{mic_sid}",
        cam_sid: f"{alice.local.sid}|{cam_sid}",
    }
