"""RTP forwarding without a network: a real ForwardingReceiver and ForwardingSenders over fake DTLS transports.

What a subscriber's transport is handed must be the publisher's packets (payload bytes untouched) on the
subscriber's own SSRC, payload type, sequence numbers and timestamps; RTCP feedback and sender reports must cross
between the two sides as an SFU passes them.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
)
from livekit.protocol import models

from loopback.aiortc_hooks import ForwardingReceiver, ForwardingSender
from loopback.forwarding import TrackForwarder, is_keyframe
from loopback.room import stream_from_source, stream_id

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
PUBLISHER_SSRC = 0x1111
PUBLISHER_RTX_SSRC = 0x2222


class FakeDtlsTransport:
    """The part of RTCDtlsTransport that senders and receivers use (with aiortc's own RTP router); records what
    they send, in plaintext."""

    def __init__(self) -> None:
        self.state = "connected"
        self.sent: list[bytes] = []
        self.receivers: list[Any] = []
        self.senders: list[Any] = []
        self._rtp_router = RtpRouter()

    def _register_rtp_receiver(self, receiver: Any, parameters: RTCRtpReceiveParameters) -> None:
        self.receivers.append(receiver)
        self._rtp_router.register_receiver(
            receiver, ssrcs=[], payload_types=[c.payloadType or 0 for c in parameters.codecs], mid=parameters.muxId
        )

    def _register_rtp_sender(self, sender: Any, parameters: Any) -> None:
        self.senders.append(sender)

    def _unregister_rtp_receiver(self, receiver: Any) -> None:
        self.receivers.remove(receiver)

    def _unregister_rtp_sender(self, sender: Any) -> None:
        self.senders.remove(sender)

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)

    def rtp(self, extensions: HeaderExtensionsMap | None = None) -> list[RtpPacket]:
        return [RtpPacket.parse(d, extensions or HeaderExtensionsMap()) for d in self.sent if not is_rtcp(d)]

    def rtcp(self) -> list[Any]:
        return [p for d in self.sent if is_rtcp(d) for p in RtcpPacket.parse(d)]


def vp8(pt: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=pt)


def rtx(pt: int, apt: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=pt, parameters={"apt": apt})


def h264(pt: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=pt,
        parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
    )


def extensions(mid_id: int, rid_id: int | None = None) -> list[RTCRtpHeaderExtensionParameters]:
    out = [RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI)]
    if rid_id is not None:
        out.append(RTCRtpHeaderExtensionParameters(id=rid_id, uri=RID_URI))
    return out


def ext_map(mid_id: int, rid_id: int | None = None) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpReceiveParameters(headerExtensions=extensions(mid_id, rid_id)))
    return m


class Publisher:
    """A ForwardingReceiver for a VP8 video track (PT 96, RTX 97) and its TrackForwarder."""

    def __init__(self, clock: list[float] | None = None) -> None:
        self.transport = FakeDtlsTransport()
        self.receiver = ForwardingReceiver("video", cast(RTCDtlsTransport, self.transport))
        self.receiver._set_rtcp_ssrc(0xAAAA)
        now = clock if clock is not None else [0.0]
        self.forwarder = TrackForwarder(self.receiver, "alice:TR_video", clock=lambda: now[0])
        self.seq = 40000
        self.ts = 123456

    async def start(self) -> None:
        await self.receiver.receive(
            RTCRtpReceiveParameters(codecs=[vp8(96), rtx(97, 96)], headerExtensions=extensions(4, 10), muxId="1")
        )

    async def frame(self, payloads: list[bytes], ssrc: int = PUBLISHER_SSRC) -> list[RtpPacket]:
        """One video frame of len(payloads) packets; returns them as sent."""
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        sent = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=96, marker=int(i == len(payloads) - 1), sequence_number=self.seq,
                               timestamp=self.ts, ssrc=ssrc, payload=payload)
            packet.extensions.mid = "1"
            packet.extensions.rtp_stream_id = "q"
            self.seq = (self.seq + 1) & 0xFFFF
            await self.receiver._handle_rtp_packet(packet, arrival_time_ms=0)
            sent.append(packet)
        return sent

    async def sender_report(self, ntp: int, rtp_ts: int) -> None:
        await self.receiver._handle_rtcp_packet(
            RtcpSrPacket(ssrc=PUBLISHER_SSRC, sender_info=RtcpSenderInfo(ntp, rtp_ts, 10, 1000))
        )


async def subscriber(publisher: Publisher, codecs: list[RTCRtpCodecParameters] | None = None, mid: str = "3"
                     ) -> tuple[ForwardingSender, FakeDtlsTransport]:
    transport = FakeDtlsTransport()
    sender = ForwardingSender("video", cast(RTCDtlsTransport, transport))
    await sender.send(
        RTCRtpSendParameters(
            codecs=codecs if codecs is not None else [vp8(98), rtx(99, 98)],
            headerExtensions=extensions(1),
            muxId=mid,
            rtcp=RTCRtcpParameters(cname="server-cname", ssrc=sender.ssrc),
        )
    )
    publisher.forwarder.subscribe().attach(sender)
    return sender, transport


# VP8 payloads (RFC 7741): descriptor S=1 PID=0, then the VP8 header's P bit (0: key frame)
VP8_KEY_START = bytes([0x10, 0x00]) + b"key"
VP8_DELTA_START = bytes([0x10, 0x01]) + b"delta"
VP8_CONTINUATION = bytes([0x00]) + b"more"


def test_keyframe_detection_reads_only_payload_headers() -> None:
    assert is_keyframe("VP8", VP8_KEY_START)
    assert not is_keyframe("VP8", VP8_DELTA_START)
    assert not is_keyframe("VP8", VP8_CONTINUATION)
    # extended descriptor: X, then I with a 15-bit picture id, L, T/K
    assert is_keyframe("VP8", bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x00]))
    assert not is_keyframe("VP8", bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x01]))
    assert is_keyframe("H264", bytes([0x65, 0x88]))  # IDR slice
    assert is_keyframe("H264", bytes([0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE]))  # STAP-A: SPS, PPS
    assert is_keyframe("H264", bytes([0x7C, 0x85, 0x88]))  # FU-A start of an IDR
    assert not is_keyframe("H264", bytes([0x7C, 0x05, 0x88]))  # FU-A continuation
    assert not is_keyframe("H264", bytes([0x41, 0x9A]))  # non-IDR slice
    assert not is_keyframe("opus", b"\x78\x01")


async def test_subscriber_gets_the_publishers_payloads_on_its_own_ssrc_pt_seq_and_timestamps() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION, VP8_CONTINUATION])  # the subscription starts mid-stream, mid-frame...
    sender, transport = await subscriber(pub)
    await pub.frame([VP8_CONTINUATION])  # ...so this frame's tail is not sent
    sent = await pub.frame([VP8_DELTA_START, VP8_CONTINUATION, VP8_CONTINUATION])
    sent += await pub.frame([VP8_DELTA_START, VP8_CONTINUATION])
    got = transport.rtp(ext_map(1))
    assert [p.payload for p in got] == [p.payload for p in sent]  # untouched, from a frame's first packet
    assert {p.ssrc for p in got} == {sender.ssrc} and sender.ssrc != PUBLISHER_SSRC
    assert {p.payload_type for p in got} == {98}  # the subscriber's number for VP8 (the publisher's is 96)
    assert [p.marker for p in got] == [p.marker for p in sent]
    seq_offsets = {(g.sequence_number - s.sequence_number) & 0xFFFF for g, s in zip(got, sent, strict=True)}
    ts_offsets = {(g.timestamp - s.timestamp) & 0xFFFFFFFF for g, s in zip(got, sent, strict=True)}
    assert len(seq_offsets) == 1 and len(ts_offsets) == 1  # consecutive and frame-aligned, on a base of its own
    assert {p.extensions.mid for p in got} == {"3"}  # the subscriber's section, not the publisher's "1"
    assert {p.extensions.rtp_stream_id for p in transport.rtp(ext_map(1, 10))} == {None}  # RID dropped
    assert pub.forwarder.packets_received == 8 and pub.forwarder.frames_received == 4


async def test_each_subscriber_has_its_own_base_and_a_codec_it_lacks_is_not_sent() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    a, a_transport = await subscriber(pub)
    b, b_transport = await subscriber(pub, codecs=[vp8(96), rtx(97, 96)])
    _, h264_transport = await subscriber(pub, codecs=[h264(102)])
    sent = await pub.frame([VP8_DELTA_START, VP8_CONTINUATION])
    got_a, got_b = a_transport.rtp(), b_transport.rtp()
    assert [p.payload for p in got_a] == [p.payload for p in got_b] == [p.payload for p in sent]
    assert a.ssrc != b.ssrc and {p.payload_type for p in got_b} == {96}
    assert h264_transport.sent == []


async def test_publisher_ssrc_change_continues_the_subscribers_sequence() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    _, transport = await subscriber(pub)
    await pub.frame([VP8_KEY_START, VP8_CONTINUATION])
    await pub.frame([VP8_CONTINUATION], ssrc=0x3333)  # not a frame start: not sent
    await pub.frame([VP8_KEY_START, VP8_CONTINUATION], ssrc=0x3333)
    got = transport.rtp()
    assert len(got) == 4
    assert [(p.sequence_number - got[0].sequence_number) & 0xFFFF for p in got] == [0, 1, 2, 3]
    assert (got[2].timestamp - got[1].timestamp) & 0xFFFFFFFF < 1 << 31  # time runs forward across the switch
    assert len({p.ssrc for p in got}) == 1


async def test_sender_reports_carry_the_publishers_ntp_time_on_each_subscribers_timestamp_base() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    _, early = await subscriber(pub)
    sent = await pub.frame([VP8_DELTA_START])
    ntp = 0xE8000000_80000000
    await pub.sender_report(ntp, sent[0].timestamp - 1500)
    _, late = await subscriber(pub)  # starts after that report: gets it first
    sent += await pub.frame([VP8_DELTA_START])
    for transport in (early, late):
        (media,) = [p for p in transport.rtp() if p.payload == sent[-1].payload][-1:]
        ts_offset = (media.timestamp - sent[-1].timestamp) & 0xFFFFFFFF
        srs = [p for p in transport.rtcp() if isinstance(p, RtcpSrPacket)]
        assert len(srs) == 1
        assert srs[0].ssrc == media.ssrc
        assert srs[0].sender_info.ntp_timestamp == ntp
        assert srs[0].sender_info.rtp_timestamp == (sent[0].timestamp - 1500 + ts_offset) & 0xFFFFFFFF
        sdes = [p for p in transport.rtcp() if isinstance(p, RtcpSdesPacket)]
        assert sdes and sdes[0].chunks[0].items == [(1, b"server-cname")]
    assert pub.forwarder.sender_reports_received == 1


async def test_keyframe_requests_are_relayed_to_the_publisher_once_until_a_keyframe_comes() -> None:
    clock = [100.0]
    pub = Publisher(clock)
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    a, _ = await subscriber(pub)
    b, _ = await subscriber(pub)
    await pub.frame([VP8_DELTA_START])
    pli_from = [RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x77, media_ssrc=s.ssrc) for s in (a, b)]
    await a._handle_rtcp_packet(pli_from[0])
    await b._handle_rtcp_packet(pli_from[1])  # at the same moment: the first request covers it

    def plis() -> list[RtcpPsfbPacket]:
        return [p for p in pub.transport.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]

    assert [(p.ssrc, p.media_ssrc) for p in plis()] == [(0xAAAA, PUBLISHER_SSRC)]
    await pub.frame([VP8_KEY_START])  # the keyframe arrives: the next request goes out at once
    await b._handle_rtcp_packet(pli_from[1])
    assert len(plis()) == 2
    clock[0] += 1.0  # no keyframe for a while: asked again
    await a._handle_rtcp_packet(pli_from[0])
    assert len(plis()) == 3
    assert pub.forwarder.keyframe_requests == 4 and pub.forwarder.keyframe_requests_sent == 3
    assert pub.forwarder.keyframes_received == 1


async def test_nacks_are_answered_from_the_cache_as_rtx() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    sender, transport = await subscriber(pub)
    sent = await pub.frame([VP8_DELTA_START, VP8_CONTINUATION, VP8_CONTINUATION])
    got = transport.rtp()
    lost = got[1].sequence_number
    await sender._handle_rtcp_packet(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=0x77, media_ssrc=sender.ssrc,
                                                     lost=[lost]))
    (resent,) = transport.rtp()[3:]
    assert resent.ssrc == sender.rtx_ssrc and resent.payload_type == 99  # the subscriber's RTX for its VP8
    assert resent.payload == lost.to_bytes(2, "big") + sent[1].payload
    assert resent.timestamp == got[1].timestamp


async def test_publisher_retransmissions_are_unwrapped_and_forwarded() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    _, transport = await subscriber(pub)
    await pub.frame([VP8_DELTA_START])
    original = RtpPacket(payload_type=96, sequence_number=pub.seq, timestamp=pub.ts + 3000, ssrc=PUBLISHER_SSRC,
                         payload=VP8_KEY_START)
    pub.seq += 1
    await pub.frame([VP8_DELTA_START])  # the packet before it was lost: the server asks for it...
    nacks = [p for p in pub.transport.rtcp() if isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK]
    assert [(n.media_ssrc, n.lost) for n in nacks] == [(PUBLISHER_SSRC, [original.sequence_number])]
    retransmission = RtpPacket(payload_type=97, sequence_number=7, timestamp=original.timestamp,
                               ssrc=PUBLISHER_RTX_SSRC,
                               payload=original.sequence_number.to_bytes(2, "big") + original.payload)
    await pub.receiver._handle_rtp_packet(retransmission, arrival_time_ms=0)  # ...and gets it as RTX
    got = transport.rtp()
    assert got[-1].payload == VP8_KEY_START and got[-1].ssrc == got[0].ssrc
    assert (got[-1].sequence_number - got[0].sequence_number) & 0xFFFF == 1


async def test_closed_forwarder_ends_its_downtracks_and_drops_packets() -> None:
    pub = Publisher()
    await pub.start()
    await pub.frame([VP8_CONTINUATION])
    _, transport = await subscriber(pub)
    await pub.forwarder.close()
    await pub.frame([VP8_KEY_START])
    assert transport.sent == [] and pub.forwarder.subscriber_count == 0
    assert pub.forwarder.subscribe().ended


async def test_packets_of_ssrcs_the_sdp_did_not_list_are_routed_by_their_mid() -> None:
    transport = FakeDtlsTransport()
    camera = ForwardingReceiver("video", cast(RTCDtlsTransport, transport))
    screen = ForwardingReceiver("video", cast(RTCDtlsTransport, transport))
    for receiver, mid in ((camera, "1"), (screen, "2")):  # both VP8 on payload type 96, no SSRC announced
        await receiver.receive(RTCRtpReceiveParameters(codecs=[vp8(96)], muxId=mid))

    def packet(ssrc: int, mid: str | None) -> RtpPacket:
        p = RtpPacket(payload_type=96, ssrc=ssrc)
        p.extensions.mid = mid
        return p

    router = transport._rtp_router
    assert router.route_rtp(packet(5, "2")) is screen
    assert router.route_rtp(packet(6, "1")) is camera
    assert router.route_rtp(packet(5, None)) is screen  # learnt: libwebrtc stops sending the mid once acknowledged
    assert router.route_rtp(packet(7, None)) is None  # nothing to tell them apart


@pytest.mark.parametrize(
    ("source", "stream"),
    [(models.TrackSource.CAMERA, "camera"), (models.TrackSource.MICROPHONE, "camera"),
     (models.TrackSource.SCREEN_SHARE, "screen"), (models.TrackSource.SCREEN_SHARE_AUDIO, "screen"),
     (models.TrackSource.UNKNOWN, "unknown")],
)
def test_stream_from_source_as_livekit_server(source: models.TrackSource, stream: str) -> None:
    assert stream_from_source(source) == stream


def test_stream_id_groups_a_participants_tracks_only_where_livekit_server_does() -> None:
    client = models.ClientInfo(sdk=models.ClientInfo.PYTHON, protocol=16)
    assert stream_id("PA_a", "TR_v", "camera", client, sync_streams=True) == "PA_a|camera"
    assert stream_id("PA_a", "TR_v", "camera", client, sync_streams=False) == "PA_a|TR_v"
    old = models.ClientInfo(protocol=9)
    assert stream_id("PA_a", "TR_v", "camera", old, sync_streams=True) == "PA_a|TR_v"
    firefox = models.ClientInfo(sdk=models.ClientInfo.JS, protocol=16, browser="Firefox")
    assert stream_id("PA_a", "TR_v", "camera", firefox, sync_streams=True) == "PA_a|TR_v"
