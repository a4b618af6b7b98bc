"""When a received frame was captured, on the sender's own clock, from the track's RTCP sender reports.

A WebRTC sender stamps each track with its own RTP clock (random origin, 48 kHz for Opus, 90 kHz for video) and
periodically sends a sender report mapping that clock to its wallclock (NTP). Frames of two tracks that carry the
same sender wallclock time were captured together: that is how a receiver lines up audio and video whatever its
jitter buffers hold. aiortc keeps the reports to itself, and the frames it decodes carry the RTP timestamp minus
the track's first one (its private TimestampMapper), so `watch_sender_reports` relies on two private parts of
aiortc's RTCRtpReceiver (aiortc is pinned to 1.16.0 in pyproject.toml): it wraps `_handle_rtcp_packet`, and reads
the mapper's `_origin`. Everything else here is plain arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtcpSrPacket

NTP_FRACTION = 2**32
RTP_WRAP = 2**32


class SenderClock:
    """Maps one track's RTP timestamps to the sender's wallclock, once a sender report has arrived."""

    def __init__(self, clock_rate: int, rtp_origin: Callable[[], int | None] = lambda: 0) -> None:
        self.clock_rate = clock_rate
        self.rtp_origin = rtp_origin  # the RTP timestamp a frame pts of 0 stands for (None: not known yet)
        self._reference: tuple[float, int] | None = None  # (sender wallclock s, RTP timestamp) of the last report

    def report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """A sender report: NTP timestamp (64-bit fixed point) and the RTP timestamp of the same instant."""
        self._reference = (ntp_timestamp / NTP_FRACTION, rtp_timestamp)

    def captured(self, pts: int | None) -> float | None:
        """Sender wallclock seconds of a frame whose pts is its RTP timestamp less `rtp_origin`; None before the
        first report."""
        origin = self.rtp_origin()
        if self._reference is None or pts is None or origin is None:
            return None
        wallclock, reference = self._reference
        delta = (pts + origin - reference) % RTP_WRAP
        if delta >= RTP_WRAP // 2:
            delta -= RTP_WRAP  # before the report
        return wallclock + delta / self.clock_rate


def watch_sender_reports(receiver: Any, clock: SenderClock) -> None:
    """Feed `clock` every sender report an aiortc RTCRtpReceiver gets (the receiver handles them as before), and
    tell it the receiver's RTP timestamp origin."""
    handle = receiver._handle_rtcp_packet
    mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
    clock.rtp_origin = lambda: getattr(mapper, "_origin", None)

    async def handle_with_clock(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            clock.report(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await handle(packet)

    receiver._handle_rtcp_packet = handle_with_clock
