"""Raw RTP in and out of aiortc, which has no public API for forwarding packets.

aiortc's ``RTCRtpReceiver`` decodes what it receives and its ``RTCRtpSender`` encodes what it sends. The server
forwards RTP packets instead, so every transceiver gets a ``ForwardingReceiver`` and a ``ForwardingSender``
(subclasses that negotiate exactly like aiortc's own, but neither decode nor encode). This is the only module that
relies on aiortc internals; they are those of aiortc 1.16.0, pinned in pyproject.toml:

* ``RTCRtpTransceiver``'s name-mangled ``__sender`` / ``__receiver``: ``install()`` swaps the subclasses in on a
  transceiver aiortc has just created (by ``addTransceiver`` or by ``setRemoteDescription`` for a new m-section),
  before aiortc starts either (its ``RTCPeerConnection.__connect`` calls ``send()`` / ``receive()`` once a
  description gave the transceiver a direction), keeping the SSRCs and stream id aiortc picked for the SDP.
* The methods aiortc's own senders and receivers use on ``RTCDtlsTransport``: ``_register_rtp_receiver`` /
  ``_register_rtp_sender`` (its RTP router then hands every SRTP-decrypted packet to the receiver's
  ``_handle_rtp_packet`` and RTCP to ``_handle_rtcp_packet`` of the receiver or sender it names),
  ``_unregister_rtp_*``, ``_send_rtp`` (SRTP-protects RTP or RTCP bytes and sends them) and the transport's
  ``state``.
* The hooks aiortc calls on its senders and receivers, overridden here: ``_handle_rtp_packet``,
  ``_handle_rtcp_packet``, ``_set_rtcp_ssrc``, ``_handle_disconnect``, ``_enabled`` (set from the negotiated
  direction), and the sender attributes aiortc writes into the SDP: ``_ssrc``, ``_rtx_ssrc``, ``_stream_id``,
  ``_track_id`` (a=ssrc, a=msid).
* ``RTCRtpTransceiver._codecs``: the codecs negotiated for a section (read by ``negotiated_codecs``).
* The transport's ``_rtp_router`` (``RtpRouter``: ``route_rtp``, ``mid_table``, ``ssrc_table``,
  ``payload_type_table``): aiortc routes a packet of an SSRC the SDP did not name by payload type alone, so when
  an offer names none (a simulcast offer has a=rid lines instead) and two sections share a payload type (camera
  and screen share, both VP8), neither gets a packet. ``route_by_mid`` makes it look at the packet's mid header
  extension first, as BUNDLE routing does.
* Modules aiortc does not export: ``aiortc.rtp`` (RTP/RTCP packet classes), ``aiortc.rtcrtpreceiver``'s
  ``StreamStatistics`` and ``NackGenerator`` and ``aiortc.rate.RemoteBitrateEstimator``: a ``ForwardingReceiver``
  sends the publisher the receiver reports, NACKs and REMB that aiortc's receiver sends, so the publisher's
  congestion control and loss recovery behave as before.

What a forwarded packet becomes is decided elsewhere (``loopback/forwarding.py``): a receiver hands each packet to
its ``sink``; a sender sends what it is given and reports the RTCP feedback its subscriber sends to its
``feedback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Protocol

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

logger = logging.getLogger("loopback")

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from the NTP epoch (1900) to the Unix epoch


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp."""
    return int((time.time() + NTP_UNIX_OFFSET) * (1 << 32))


class PacketSink(Protocol):
    """Where a ``ForwardingReceiver`` delivers what the publisher sends (a TrackForwarder)."""

    async def on_rtp(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None: ...

    async def on_sender_report(self, report: RtcpSrPacket) -> None: ...


class SenderFeedback(Protocol):
    """Where a ``ForwardingSender`` reports its subscriber's RTCP feedback (a Downtrack)."""

    async def on_keyframe_request(self) -> None: ...

    async def on_nack(self, lost: list[int]) -> None: ...


class ForwardingReceiver(RTCRtpReceiver):
    """Receives a publisher's RTP and hands every packet, payload untouched, to ``sink``; never decodes.

    RTX retransmissions are unwrapped (the sink sees the original packet again). Towards the publisher it sends
    what aiortc's receiver sends: receiver reports, NACKs for missing video packets, REMB, and PLIs on request
    (``request_keyframe``).
    """

    def __init__(self, kind: str, transport: RTCDtlsTransport) -> None:
        super().__init__(kind, transport)
        self.kind = kind
        self.sink: PacketSink | None = None
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self.media_ssrc: int | None = None  # the SSRC the publisher's media (not RTX) last came on
        self._rtx_ssrcs: dict[int, int] = {}  # RTX SSRC -> media SSRC
        self._streams: dict[int, StreamStatistics] = {}
        self._lsr: dict[int, tuple[int, float]] = {}  # SSRC -> (middle 32 bits of its last SR's NTP, arrival)
        self._nack = NackGenerator() if kind == "video" else None
        self._remb = RemoteBitrateEstimator() if kind == "video" else None
        self._rtcp_ssrc: int | None = None
        self._started = False
        self._rtcp_task: asyncio.Task[None] | None = None

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        if self._started:
            return
        for codec in parameters.codecs:
            if codec.payloadType is not None:
                self.codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._rtx_ssrcs[encoding.rtx.ssrc] = encoding.ssrc
        self.transport._register_rtp_receiver(self, parameters)
        route_by_mid(self.transport)
        self._rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.transport._unregister_rtp_receiver(self)
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            await asyncio.gather(self._rtcp_task, return_exceptions=True)

    def pending_tasks(self) -> list[asyncio.Future[None]]:
        return [t for t in (self._rtcp_task,) if t is not None and not t.done()]

    def _handle_disconnect(self) -> None:
        pass  # nothing to stop: no decoder

    def _set_rtcp_ssrc(self, ssrc: int) -> None:
        super()._set_rtcp_ssrc(ssrc)
        self._rtcp_ssrc = ssrc

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if not self._enabled or not self._started:
            return
        if self._remb is not None and packet.extensions.abs_send_time is not None:
            remb = self._remb.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if self._rtcp_ssrc is not None and remb is not None:
                await self._send_to_publisher(
                    RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb))
                )
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            apt = codec.parameters.get("apt")
            media_ssrc = self._rtx_ssrcs.get(packet.ssrc, self.media_ssrc)
            if len(packet.payload) < 2 or not isinstance(apt, int) or apt not in self.codecs or media_ssrc is None:
                return  # padding only (bandwidth probing), or nothing to repair
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=media_ssrc)
            codec = self.codecs[apt]
        else:
            self.media_ssrc = packet.ssrc
        if self._nack is not None and self._nack.add(packet) and self._rtcp_ssrc is not None:
            nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._rtcp_ssrc, media_ssrc=packet.ssrc)
            nack.lost = sorted(self._nack.missing)
            await self._send_to_publisher(nack)
        sink = self.sink
        if sink is not None:
            try:
                await sink.on_rtp(packet, codec)
            except Exception:  # a forwarding bug must not close the publisher's transport
                logger.exception("forwarding an RTP packet failed")

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if not isinstance(packet, RtcpSrPacket):
            return
        self._lsr[packet.ssrc] = ((packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF, time.time())
        sink = self.sink
        if sink is not None:
            try:
                await sink.on_sender_report(packet)
            except Exception:
                logger.exception("forwarding a sender report failed")

    async def request_keyframe(self) -> bool:
        """Send the publisher a PLI for its media SSRC; False when there is nobody to ask yet."""
        if self._rtcp_ssrc is None or self.media_ssrc is None or not self._started:
            return False
        pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=self.media_ssrc)
        await self._send_to_publisher(pli)
        return True

    async def _run_rtcp(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                # as aiortc: every 0.5-1.5 s, a receiver report about every SSRC heard
                await asyncio.sleep(0.5 + random.random())
                reports = []
                for ssrc, stream in self._streams.items():
                    lsr, dlsr = 0, 0
                    if ssrc in self._lsr:
                        lsr, at = self._lsr[ssrc]
                        delay = time.time() - at
                        if 0 < delay < 65536:
                            dlsr = int(delay * 65536)
                    reports.append(
                        RtcpReceiverInfo(
                            ssrc=ssrc,
                            fraction_lost=stream.fraction_lost,
                            packets_lost=stream.packets_lost,
                            highest_sequence=stream.max_seq or 0,
                            jitter=stream.jitter,
                            lsr=lsr,
                            dlsr=dlsr,
                        )
                    )
                if self._rtcp_ssrc is not None and reports:
                    await self._send_to_publisher(RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=reports))

    async def _send_to_publisher(self, packet: AnyRtcpPacket) -> None:
        with contextlib.suppress(ConnectionError):
            await self.transport._send_rtp(bytes(packet))


class ForwardingSender(RTCRtpSender):
    """Sends the RTP packets it is given (``send_rtp``) on its SSRC; never encodes.

    Negotiates like aiortc's sender (same SSRCs, RTX, header extensions); the mid and abs-send-time header
    extensions are its own, the rest of a packet is the caller's. PLI/FIR and NACKs from the subscriber go to
    ``feedback``.
    """

    def __init__(self, kind: str, transport: RTCDtlsTransport, *, like: RTCRtpSender | None = None) -> None:
        super().__init__(kind, transport)
        if like is not None:  # keep what aiortc already chose for this transceiver
            self._ssrc = like._ssrc
            self._rtx_ssrc = like._rtx_ssrc
            self._stream_id = like._stream_id
            self._track_id = like._track_id
        self.feedback: SenderFeedback | None = None
        self.codecs: list[RTCRtpCodecParameters] = []
        self.mid: str | None = None
        self.started = False
        self.packets_sent = 0
        self.octets_sent = 0
        self.sender_reports_sent = 0
        self._cname: str | None = None
        self._extensions = HeaderExtensionsMap()

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self.started:
            return
        self._cname = parameters.rtcp.cname
        self.mid = parameters.muxId
        self.codecs = list(parameters.codecs)
        self._extensions.configure(parameters)
        self.transport._register_rtp_sender(self, parameters)
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self.transport._unregister_rtp_sender(self)
        await self._send_rtcp_packets([RtcpByePacket(sources=[self._ssrc])])

    def pending_tasks(self) -> list[asyncio.Future[None]]:
        return []

    @property
    def ssrc(self) -> int:
        return int(self._ssrc)

    @property
    def rtx_ssrc(self) -> int:
        return int(self._rtx_ssrc)

    def set_msid(self, stream_id: str, track_id: str) -> None:
        """The a=msid this sender's section will carry."""
        self._stream_id = stream_id
        self._track_id = track_id

    @property
    def sending(self) -> bool:
        """Negotiated, its direction sends, and its transport is connected."""
        return self.started and self._enabled and self.transport.state == "connected"

    async def send_rtp(self, packet: RtpPacket) -> bool:
        """Send ``packet`` (its SSRC and payload type already this sender's) with this sender's mid."""
        if not self.sending:
            return False
        packet.extensions.mid = self.mid
        packet.extensions.abs_send_time = (ntp_now() >> 14) & 0x00FFFFFF
        try:
            await self.transport._send_rtp(packet.serialize(self._extensions))
        except ConnectionError:
            return False
        self.packets_sent += 1
        self.octets_sent += len(packet.payload)
        return True

    async def send_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> bool:
        """An RTCP SR (with this sender's counts and an SDES CNAME) stating that mapping of NTP to RTP time."""
        if not self.sending:
            return False
        packets: list[AnyRtcpPacket] = [
            RtcpSrPacket(
                ssrc=self._ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp_timestamp,
                    rtp_timestamp=rtp_timestamp,
                    packet_count=self.packets_sent & 0xFFFFFFFF,
                    octet_count=self.octets_sent & 0xFFFFFFFF,
                ),
            )
        ]
        if self._cname is not None:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, self._cname.encode())])]))
        if await self._send_rtcp_packets(packets):
            self.sender_reports_sent += 1
            return True
        return False

    async def _send_rtcp_packets(self, packets: list[AnyRtcpPacket]) -> bool:
        try:
            await self.transport._send_rtp(b"".join(bytes(p) for p in packets))
        except ConnectionError:
            return False
        return True

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        feedback = self.feedback
        if feedback is None:
            return
        try:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                await feedback.on_keyframe_request()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                await feedback.on_nack(packet.lost)
        except Exception:  # a forwarding bug must not close the subscriber's transport
            logger.exception("handling RTCP feedback failed")


def route_by_mid(transport: RTCDtlsTransport) -> None:
    """Make the transport route a packet of an SSRC it does not know yet by the packet's mid, before aiortc's
    routing by payload type (which finds nobody when two receivers share the payload type); the SSRC is then
    learnt. Idempotent."""
    router = transport._rtp_router
    if getattr(router, "_loopback_routes_by_mid", False):
        return
    route_rtp = router.route_rtp

    def route(packet: RtpPacket) -> Any:
        mid = packet.extensions.mid
        if mid is not None and packet.ssrc not in router.ssrc_table:
            receiver = router.mid_table.get(mid)
            if receiver is not None and receiver in router.payload_type_table.get(packet.payload_type, ()):
                router.ssrc_table[packet.ssrc] = receiver
        return route_rtp(packet)

    router.route_rtp = route  # type: ignore[method-assign]
    router._loopback_routes_by_mid = True  # type: ignore[attr-defined]


def install(transceiver: RTCRtpTransceiver) -> None:
    """Give a transceiver aiortc has just created a ForwardingSender and a ForwardingReceiver.

    Call it right after ``addTransceiver`` or ``setRemoteDescription`` returns, before anything else awaits: aiortc
    starts senders and receivers from a task that those calls schedule.
    """
    sender, receiver = transceiver.sender, transceiver.receiver
    if not isinstance(sender, ForwardingSender):
        sender = ForwardingSender(transceiver.kind, sender.transport, like=sender)
        _set_private(transceiver, "sender", sender)
    if not isinstance(receiver, ForwardingReceiver):
        forwarding = ForwardingReceiver(transceiver.kind, receiver.transport)
        forwarding._set_rtcp_ssrc(sender._ssrc)  # as RTCPeerConnection does for a new transceiver
        _set_private(transceiver, "receiver", forwarding)


def _set_private(transceiver: RTCRtpTransceiver, name: str, value: Any) -> None:
    attribute = f"_RTCRtpTransceiver__{name}"
    if not hasattr(transceiver, attribute):
        raise RuntimeError(f"aiortc's RTCRtpTransceiver has no {attribute}: is aiortc still 1.16.0?")
    setattr(transceiver, attribute, value)


def forwarding_parts(transceiver: RTCRtpTransceiver) -> tuple[ForwardingSender, ForwardingReceiver]:
    sender, receiver = transceiver.sender, transceiver.receiver
    if not isinstance(sender, ForwardingSender) or not isinstance(receiver, ForwardingReceiver):
        raise RuntimeError("transceiver was not installed for forwarding")
    return sender, receiver


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated for the transceiver's section, preferred first (RTX included)."""
    return list(getattr(transceiver, "_codecs", []))
