"""Selective forwarding, as livekit-server does it: a published track's RTP packets go to every subscriber as they
arrived (payload bytes untouched, nothing decoded or encoded).

Per subscriber a ``Downtrack`` rewrites what must differ on its connection: the SSRC (its sender's), the payload
type (the number its subscriber negotiated for the publisher's codec), and the sequence numbers and timestamps,
which start at a random base of the downtrack's own when it starts (mid-stream, at the first packet of a frame) and
continue without a gap if the publisher's SSRC changes. Header extensions are re-written in the subscriber's id
space (mid, abs-send-time, audio level; the publisher's RID and others are dropped).

RTCP:

* Sender reports: every SR of the publisher is passed on at once by each downtrack, with the publisher's NTP time
  and its RTP time moved to the downtrack's timestamp base (and the downtrack's own packet and octet counts); a
  downtrack starting sends the publisher's last SR first. So every subscriber keeps the publisher's NTP<->RTP
  mapping of each track: what lets it lip-sync a participant's audio and video.
* Keyframe requests: a subscriber's PLI (or FIR) is relayed to the publisher as a PLI, at most one per
  ``KEYFRAME_REQUEST_INTERVAL_S`` until a keyframe arrives (several subscribers asking together make one request).
  A late subscriber starts on a delta frame, its decoder asks for a keyframe, and gets the one this brings.
* NACKs: answered from a per-track cache of the last ``CACHE_PACKETS`` packets, as RTX when the subscriber
  negotiated it; a packet the server itself never got is asked for by the server's own NACKs to the publisher
  (``ForwardingReceiver``), and reaches every subscriber when it arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import HeaderExtensions, RtcpSrPacket, RtpPacket, wrap_rtx
from aiortc.utils import random16, random32, uint16_gt

from .aiortc_hooks import ForwardingReceiver, ForwardingSender

logger = logging.getLogger("loopback")

CACHE_PACKETS = 512
KEYFRAME_REQUEST_INTERVAL_S = 0.5
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF


def is_keyframe(codec_name: str, payload: bytes) -> bool:
    """Whether an RTP payload starts a keyframe (VP8: RFC 7741 descriptor and header; H264: IDR or SPS)."""
    if not payload:
        return False
    name = codec_name.upper()
    if name == "VP8":
        first = payload[0]
        if not first & 0x10 or first & 0x07:  # S: start of a partition; PID: partition 0
            return False
        i = 1
        if first & 0x80:  # X: extension byte
            if len(payload) < 2:
                return False
            ext = payload[1]
            i = 2
            if ext & 0x80:  # I: picture id, 7 or 15 bits
                if len(payload) <= i:
                    return False
                i += 2 if payload[i] & 0x80 else 1
            if ext & 0x40:  # L: TL0PICIDX
                i += 1
            if ext & 0x30:  # T or K: TID/Y/KEYIDX
                i += 1
        return len(payload) > i and not payload[i] & 0x01  # P bit 0: key frame
    if name == "H264":
        nal = payload[0] & 0x1F
        if nal in (5, 7):  # IDR slice, SPS
            return True
        if nal == 24:  # STAP-A
            i = 1
            while i + 2 < len(payload):
                size = (payload[i] << 8) | payload[i + 1]
                if payload[i + 2] & 0x1F in (5, 7):
                    return True
                i += 2 + size
            return False
        if nal == 28 and len(payload) > 1:  # FU-A: its start fragment
            return bool(payload[1] & 0x80) and payload[1] & 0x1F == 5
    return False


def starts_frame(codec_name: str, payload: bytes) -> bool | None:
    """Whether an RTP payload is the first of a video frame, when its payload header says (VP8: S=1, PID=0)."""
    if codec_name.upper() == "VP8":
        return bool(payload) and payload[0] & 0x17 == 0x10
    return None


def codec_matches(a: RTCRtpCodecParameters, b: RTCRtpCodecParameters) -> bool:
    """Whether packets of codec ``a`` can be sent as codec ``b`` unchanged (same codec, same packetization)."""
    if a.mimeType.lower() != b.mimeType.lower() or a.clockRate != b.clockRate:
        return False
    if a.mimeType.lower() == "video/h264":
        mode_a = str(a.parameters.get("packetization-mode", "0"))
        mode_b = str(b.parameters.get("packetization-mode", "0"))
        return mode_a == mode_b
    return True


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int


class TrackForwarder:
    """One published track: what its ForwardingReceiver gets goes to every attached Downtrack."""

    def __init__(
        self, receiver: ForwardingReceiver, name: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kind = receiver.kind
        self.name = name
        self.receiver = receiver
        self._clock = clock
        self._downtracks: set[Downtrack] = set()
        self._cache: list[RtpPacket | None] = [None] * CACHE_PACKETS
        self._last_seq: int | None = None
        self._last_ts: int | None = None
        self._keyframe_requested_at: float | None = None
        self.ended = False
        self.ssrc: int | None = None  # the publisher's media SSRC, from its packets
        self.codec: RTCRtpCodecParameters | None = None  # the codec of its last packet
        self.last_sender_report: SenderReport | None = None
        self.packets_received = 0
        self.frames_received = 0  # video: frames completed (marker bits); audio: packets
        self.keyframes_received = 0
        self.keyframe_requests = 0  # PLI/FIR from subscribers
        self.keyframe_requests_sent = 0  # PLIs sent to the publisher
        self.sender_reports_received = 0
        receiver.sink = self

    @property
    def subscriber_count(self) -> int:
        return len(self._downtracks)

    def subscribe(self) -> Downtrack:
        downtrack = Downtrack(self)
        if self.ended:
            downtrack.end()
        else:
            self._downtracks.add(downtrack)
        return downtrack

    def detach(self, downtrack: Downtrack) -> None:
        self._downtracks.discard(downtrack)

    def cached(self, sequence_number: int) -> RtpPacket | None:
        packet = self._cache[sequence_number % CACHE_PACKETS]
        return packet if packet is not None and packet.sequence_number == sequence_number else None

    # ------------------------------------------------------------------ from the publisher
    async def on_rtp(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        if self.ended:
            return
        self.packets_received += 1
        if packet.ssrc != self.ssrc:
            self.ssrc = packet.ssrc
            self._last_seq = self._last_ts = None
        self.codec = codec
        seq = packet.sequence_number
        newest = self._last_seq is None or uint16_gt(seq, self._last_seq)
        frame_start = True if self.kind == "audio" else starts_frame(codec.name, packet.payload)
        if frame_start is None:
            # where the payload does not say: where the timestamp changes (packets arrive in order nearly always;
            # a reordered one is never taken for a start)
            frame_start = newest and self._last_ts is not None and packet.timestamp != self._last_ts
        if newest:
            self._last_seq, self._last_ts = seq, packet.timestamp
        if self.kind == "audio" or packet.marker:
            self.frames_received += 1
        keyframe = self.kind == "video" and is_keyframe(codec.name, packet.payload)
        if keyframe:
            self.keyframes_received += 1
            self._keyframe_requested_at = None
        self._cache[seq % CACHE_PACKETS] = packet
        for downtrack in list(self._downtracks):
            await downtrack.forward(packet, codec, frame_start, keyframe)

    async def on_sender_report(self, report: RtcpSrPacket) -> None:
        if self.ended:
            return
        self.sender_reports_received += 1
        sr = SenderReport(report.ssrc, report.sender_info.ntp_timestamp, report.sender_info.rtp_timestamp)
        self.last_sender_report = sr
        for downtrack in list(self._downtracks):
            await downtrack.on_sender_report(sr)

    # ------------------------------------------------------------------ to the publisher
    async def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        if self.kind != "video" or self.ended:
            return
        now = self._clock()
        if self._keyframe_requested_at is not None and now - self._keyframe_requested_at < KEYFRAME_REQUEST_INTERVAL_S:
            return  # one is on its way
        if await self.receiver.request_keyframe():
            self._keyframe_requested_at = now
            self.keyframe_requests_sent += 1

    async def close(self) -> None:
        """Stop forwarding: every downtrack ends; the receiver's packets are dropped from now on."""
        self.ended = True
        if self.receiver.sink is self:
            self.receiver.sink = None
        for downtrack in list(self._downtracks):
            downtrack.end()
        self._downtracks.clear()


class Downtrack:
    """One subscriber's copy of a track: rewrites and sends through the subscriber's ForwardingSender."""

    def __init__(self, forwarder: TrackForwarder) -> None:
        self.kind = forwarder.kind
        self._forwarder: TrackForwarder | None = forwarder
        self.sender: ForwardingSender | None = None
        self.ended = False
        self.started = False
        self.source_ssrc: int | None = None
        self.seq_offset = 0
        self.ts_offset = 0
        self._last_seq_out: int | None = None
        self._last_ts_out = 0
        self._last_sent_at = 0.0
        self._payload_types: dict[int, tuple[int, int | None] | None] = {}  # publisher PT -> (PT, RTX PT) here
        self._rtx_seq = random16() % 32768
        self.first_frame_keyframe: bool | None = None
        self.packets_sent = 0
        self.keyframe_requests = 0
        self.retransmissions = 0
        self.sender_reports_sent = 0

    @property
    def ssrc(self) -> int | None:
        return self.sender.ssrc if self.sender is not None else None

    def attach(self, sender: ForwardingSender) -> None:
        """Send through ``sender`` (once it is negotiated and connected; nothing is queued before)."""
        self.sender = sender
        sender.feedback = self

    def end(self) -> None:
        self.ended = True
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.detach(self)
        if self.sender is not None and self.sender.feedback is self:
            self.sender.feedback = None

    # ------------------------------------------------------------------ RTP
    def _payload_type(self, sender: ForwardingSender, pt: int, codec: RTCRtpCodecParameters) -> tuple[int, int | None]:
        if pt not in self._payload_types:
            found: tuple[int, int | None] | None = None
            for candidate in sender.codecs:
                if candidate.payloadType is None or is_rtx(candidate) or not codec_matches(codec, candidate):
                    continue
                apt = candidate.payloadType
                rtx = next((c.payloadType for c in sender.codecs if is_rtx(c) and c.parameters.get("apt") == apt), None)
                found = (candidate.payloadType, rtx)
                if candidate.parameters.get("profile-level-id") == codec.parameters.get("profile-level-id"):
                    break
            if found is None:
                logger.warning("subscriber did not negotiate %s: not forwarding it", codec.mimeType)
            self._payload_types[pt] = found
        found = self._payload_types[pt]
        if found is None:
            raise LookupError(codec.mimeType)
        return found

    def _anchor(self, packet: RtpPacket, clock_rate: int) -> None:
        """Map the publisher's sequence numbers and timestamps from ``packet`` on into this downtrack's."""
        if self._last_seq_out is None:
            seq_out, ts_out = random16() % 32768, random32()
        else:  # a new publisher SSRC: continue where the old one left off
            seq_out = (self._last_seq_out + 1) & _SEQ_MASK
            elapsed = max(1, int((time.monotonic() - self._last_sent_at) * clock_rate))
            ts_out = (self._last_ts_out + elapsed) & _TS_MASK
        self.seq_offset = (seq_out - packet.sequence_number) & _SEQ_MASK
        self.ts_offset = (ts_out - packet.timestamp) & _TS_MASK
        self.source_ssrc = packet.ssrc

    def _rewrite(self, packet: RtpPacket, pt: int, ssrc: int) -> RtpPacket:
        out = RtpPacket(
            payload_type=pt,
            marker=packet.marker,
            sequence_number=(packet.sequence_number + self.seq_offset) & _SEQ_MASK,
            timestamp=(packet.timestamp + self.ts_offset) & _TS_MASK,
            ssrc=ssrc,
            payload=packet.payload,
        )
        out.csrc = packet.csrc
        out.padding_size = packet.padding_size
        out.extensions = HeaderExtensions(audio_level=packet.extensions.audio_level)
        return out

    async def forward(self, packet: RtpPacket, codec: RTCRtpCodecParameters, frame_start: bool, keyframe: bool) -> None:
        sender = self.sender
        if self.ended or sender is None or not sender.sending:
            return
        if packet.ssrc != self.source_ssrc:
            if not frame_start:
                return  # start (or switch source) on the first packet of a frame
            try:
                self._payload_type(sender, packet.payload_type, codec)
            except LookupError:
                return
            first = not self.started
            self._anchor(packet, codec.clockRate)
            if first:
                self.started = True
                self.first_frame_keyframe = keyframe if self.kind == "video" else None
                forwarder = self._forwarder
                if forwarder is not None and forwarder.last_sender_report is not None:
                    await self.on_sender_report(forwarder.last_sender_report)
        try:
            pt, _ = self._payload_type(sender, packet.payload_type, codec)
        except LookupError:
            return
        out = self._rewrite(packet, pt, sender.ssrc)
        if not await sender.send_rtp(out):
            return
        self.packets_sent += 1
        if self._last_seq_out is None or uint16_gt(out.sequence_number, self._last_seq_out):
            self._last_seq_out = out.sequence_number
            self._last_ts_out = out.timestamp
            self._last_sent_at = time.monotonic()

    # ------------------------------------------------------------------ RTCP
    async def on_sender_report(self, report: SenderReport) -> None:
        sender = self.sender
        if self.ended or sender is None or not self.started or report.ssrc != self.source_ssrc:
            return
        if await sender.send_sender_report(report.ntp_timestamp, (report.rtp_timestamp + self.ts_offset) & _TS_MASK):
            self.sender_reports_sent += 1

    async def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        forwarder = self._forwarder
        if forwarder is not None:
            await forwarder.request_keyframe()

    async def on_nack(self, lost: list[int]) -> None:
        forwarder, sender = self._forwarder, self.sender
        if forwarder is None or sender is None or not self.started:
            return
        for seq_out in lost:
            packet = forwarder.cached((seq_out - self.seq_offset) & _SEQ_MASK)
            codec = forwarder.receiver.codecs.get(packet.payload_type) if packet is not None else None
            if packet is None or codec is None or packet.ssrc != self.source_ssrc:
                continue
            try:
                pt, rtx_pt = self._payload_type(sender, packet.payload_type, codec)
            except LookupError:
                continue
            out = self._rewrite(packet, pt, sender.ssrc)
            if rtx_pt is not None:
                out = wrap_rtx(out, payload_type=rtx_pt, sequence_number=self._rtx_seq, ssrc=sender.rtx_ssrc)
                self._rtx_seq = (self._rtx_seq + 1) & _SEQ_MASK
            if await sender.send_rtp(out):
                self.retransmissions += 1
