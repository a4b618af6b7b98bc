"""Shared helpers for the loopback server tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from livekit import rtc

from loopback import not_in_namespace_reason
from loopback.aiortc_hooks import NTP_UNIX_OFFSET

# The test secret is deliberately short; PyJWT warns about that on every token.
warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")

API_KEY = "devkey"
API_SECRET = "loopback-test-secret-0123456789abcdef"
TIMEOUT = 20.0

requires_netns = pytest.mark.skipif(not_in_namespace_reason() is not None, reason=not_in_namespace_reason() or "")


class Events:
    """Records a Room's events in order so tests can wait on them (no sleeps)."""

    NAMES = (
        "participant_connected",
        "participant_disconnected",
        "track_published",
        "track_unpublished",
        "track_subscribed",
        "track_unsubscribed",
        "track_muted",
        "track_unmuted",
        "data_received",
        "disconnected",
        "participant_attributes_changed",
        "participant_metadata_changed",
    )

    def __init__(self, room: rtc.Room) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = asyncio.Event()
        for name in self.NAMES:
            room.on(name, self._recorder(name))  # type: ignore[arg-type]

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.log.append((name, args))
            self._changed.set()

        return record

    async def wait(
        self,
        name: str,
        predicate: Callable[..., bool] = lambda *a: True,
        timeout: float = TIMEOUT,  # noqa: ASYNC109 - deadline for the whole wait
    ) -> tuple[Any, ...]:
        """The first recorded ``name`` event whose args satisfy ``predicate`` (waits for it if needed)."""
        async with asyncio.timeout(timeout):
            while True:
                for event, args in self.log:
                    if event == name and predicate(*args):
                        return args
                self._changed.clear()
                await self._changed.wait()


class Client:
    def __init__(self, room: rtc.Room, identity: str) -> None:
        self.room = room
        self.identity = identity
        self.events = Events(room)

    @property
    def local(self) -> rtc.LocalParticipant:
        return self.room.local_participant


ConnectFn = Callable[..., Awaitable[Client]]


@contextlib.asynccontextmanager
async def running(*coros: object) -> AsyncIterator[None]:
    """Run the coroutines (media feeders) while the block runs; cancel them after."""
    tasks = [asyncio.ensure_future(c) for c in coros]  # type: ignore[call-overload]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------- media sources and checks
SAMPLE_RATE = 48000
TONE_HZ = 440.0
WIDTH, HEIGHT = 320, 240
COLOR = (200, 40, 120)


async def feed_tone(source: rtc.AudioSource, freq: float = TONE_HZ, amplitude: int = 8000) -> None:
    """Push a sine tone forever (capture_frame paces itself in real time)."""
    import numpy as np

    n = SAMPLE_RATE // 100
    t = 0
    while True:
        samples = amplitude * np.sin(2 * np.pi * freq * (np.arange(n) + t) / SAMPLE_RATE)
        t += n
        frame = rtc.AudioFrame(samples.astype(np.int16).tobytes(), SAMPLE_RATE, 1, n)
        await source.capture_frame(frame)


async def feed_video(source: rtc.VideoSource, color: tuple[int, int, int] = COLOR, fps: int = 30) -> None:
    """Push solid-colour RGBA frames at ``fps`` (the sleep paces a media source, it syncs nothing)."""
    rgba = bytes([*color, 255]) * (WIDTH * HEIGHT)
    while True:
        source.capture_frame(rtc.VideoFrame(WIDTH, HEIGHT, rtc.VideoBufferType.RGBA, rgba))
        await asyncio.sleep(1 / fps)


async def tone_stats(track: rtc.Track, frames: int = 50, skip: int = 20) -> tuple[float, float]:
    """(RMS, dominant frequency in Hz) of ``frames`` 10 ms frames received on ``track``."""
    import numpy as np

    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    chunks: list[Any] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                data = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
                if not chunks and skip > 0:  # wait for sound, then let jitter buffers settle
                    if np.abs(data).max() > 100:
                        skip -= 1
                    continue
                chunks.append(data)
                if len(chunks) >= frames:
                    break
    finally:
        await stream.aclose()
    signal = np.concatenate(chunks)
    rms = float(np.sqrt(np.mean(signal**2)))
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    peak = float(np.fft.rfftfreq(len(signal), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])
    return rms, peak


async def first_video_frames(track: rtc.Track, count: int = 5) -> list[rtc.VideoFrame]:
    """``count`` frames received on ``track``, converted to RGBA."""
    stream = rtc.VideoStream(track)
    frames: list[rtc.VideoFrame] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            async for event in stream:
                frames.append(event.frame.convert(rtc.VideoBufferType.RGBA))
                if len(frames) >= count:
                    break
    finally:
        await stream.aclose()
    return frames


def mean_color(frame: rtc.VideoFrame) -> tuple[float, float, float]:
    """Mean RGB of the central quarter of an RGBA frame."""
    import numpy as np

    pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 4)
    h, w = frame.height, frame.width
    centre = pixels[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, :3].reshape(-1, 3).astype(np.float64)
    r, g, b = centre.mean(axis=0)
    return float(r), float(g), float(b)


# ---------------------------------------------------------------------- the server's RTP and RTCP, in plaintext
def ntp_to_unix_ms(ntp: int) -> float:
    return ((ntp >> 32) - NTP_UNIX_OFFSET) * 1000 + (ntp & 0xFFFFFFFF) * 1000 / (1 << 32)


class WireTap:
    """Every RTP and RTCP packet the in-process loopback server's DTLS transports decrypt (``received``) or are
    about to encrypt (``sent``), parsed, in order; ``await tap.wait(predicate)`` waits for more (no sleeps).

    Installed on aiortc's RTCDtlsTransport class (its private ``_handle_rtp_data``, ``_handle_rtcp_data`` and
    ``_send_rtp``) for the test's duration: the server's side of every connection, as close to the wire as
    plaintext gets.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aiortc.rtcdtlstransport import RTCDtlsTransport
        from aiortc.rtp import RtcpPacket, RtpPacket, is_rtcp

        self.rtp_received: list[RtpPacket] = []
        self.rtcp_received: list[Any] = []
        self.rtp_sent: list[RtpPacket] = []
        self.rtcp_sent: list[Any] = []
        self._changed = asyncio.Event()
        handle_rtp, handle_rtcp, send = (
            RTCDtlsTransport._handle_rtp_data,
            RTCDtlsTransport._handle_rtcp_data,
            RTCDtlsTransport._send_rtp,
        )

        def record(into: list[Any], parse: Callable[[bytes], Any], data: bytes, many: bool) -> None:
            try:
                parsed = parse(data)
            except ValueError:
                return
            if many:
                into.extend(parsed)
            else:
                into.append(parsed)
            self._changed.set()

        async def tapped_rtp(transport: Any, data: bytes, arrival_time_ms: int) -> None:
            record(self.rtp_received, RtpPacket.parse, data, many=False)
            await handle_rtp(transport, data, arrival_time_ms)

        async def tapped_rtcp(transport: Any, data: bytes) -> None:
            record(self.rtcp_received, RtcpPacket.parse, data, many=True)
            await handle_rtcp(transport, data)

        async def tapped_send(transport: Any, data: bytes) -> None:
            if is_rtcp(data):
                record(self.rtcp_sent, RtcpPacket.parse, data, many=True)
            else:
                record(self.rtp_sent, RtpPacket.parse, data, many=False)
            await send(transport, data)

        monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", tapped_rtp)
        monkeypatch.setattr(RTCDtlsTransport, "_handle_rtcp_data", tapped_rtcp)
        monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", tapped_send)

    async def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def received_on(self, ssrc: int | None) -> list[Any]:
        return [p for p in self.rtp_received if p.ssrc == ssrc]

    def sent_on(self, ssrc: int | None) -> list[Any]:
        return [p for p in self.rtp_sent if p.ssrc == ssrc]


def rtpmap(sdp: str, mid: str) -> dict[int, str]:
    """Payload type -> "codec/clock" of the section ``mid`` of an SDP."""
    out: dict[int, str] = {}
    for section in sdp.split("m=")[1:]:
        lines = section.splitlines()
        if f"a=mid:{mid}" not in lines:
            continue
        for line in lines:
            if line.startswith("a=rtpmap:"):
                pt, codec = line[len("a=rtpmap:") :].split(" ", 1)
                out[int(pt)] = codec
    return out


def msids(sdp: str) -> dict[str, tuple[str, str]]:
    """mid -> (msid stream id, msid track id) of every section of an SDP that sends."""
    out: dict[str, tuple[str, str]] = {}
    for section in sdp.split("m=")[1:]:
        lines = section.splitlines()
        mid = next((ln[len("a=mid:") :] for ln in lines if ln.startswith("a=mid:")), None)
        msid = next((ln[len("a=msid:") :].split() for ln in lines if ln.startswith("a=msid:")), None)
        if mid is not None and msid is not None and ("a=sendonly" in lines or "a=sendrecv" in lines):
            out[mid] = (msid[0], msid[1])
    return out
