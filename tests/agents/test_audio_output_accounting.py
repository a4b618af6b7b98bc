"""GatewayAudioOutput's accounting against a scripted stream (no gateway, no room): exactly one finish per segment
the agent counted, in order, whatever reached the gateway; nothing sent or finished for a flush with no audio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent

from agent_client import AudioStream, GatewayError, PlaybackEvent, PlaybackFinished, PlaybackStarted
from agent_client.livekit import AvatarSession, GatewayAudioOutput
from agent_client.livekit.avatar import API_KEY_ENV, GATEWAY_ENV

TIMEOUT = 10.0
RATE = 16000


class ScriptedStream:
    """Stands in for agent_client.AudioStream: records what is sent, plays back the events a test feeds it."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.events: asyncio.Queue[PlaybackEvent | None] = asyncio.Queue()
        self.changed = asyncio.Event()
        self.cancelled = False

    def _record(self, what: str) -> None:
        self.sent.append(what)
        self.changed.set()

    async def send(self, pcm: bytes) -> int:
        self._record(f"audio:{len(pcm) // 2}")
        return 0

    async def end_segment(self) -> int:
        self._record("end")
        return 0

    async def clear(self) -> None:
        self._record("clear")

    def cancel(self) -> None:
        self.cancelled = True
        self.events.put_nowait(None)

    async def _events(self) -> AsyncIterator[PlaybackEvent]:
        while (event := await self.events.get()) is not None:
            yield event
        raise GatewayError(grpc.StatusCode.CANCELLED, "cancelled")

    def events_iter(self) -> AsyncIterator[PlaybackEvent]:
        return self._events()

    async def wait_sent(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.sent) < count:
                self.changed.clear()
                await self.changed.wait()


class World:
    def __init__(self) -> None:
        self.stream = ScriptedStream()
        self.ready = asyncio.Event()
        self.ready.set()
        self.waiting = asyncio.Event()  # a capture is waiting for the avatar
        self.opened = 0
        self.finished: list[PlaybackFinishedEvent] = []
        self.out = GatewayAudioOutput(open_stream=self._open, ready=self._ready)
        self.out.on("playback_finished", self.finished.append)

    async def _open(self, rate: int, channels: int) -> AudioStream:
        self.opened += 1
        return cast(AudioStream, _Adapter(self.stream))

    async def _ready(self) -> None:
        self.waiting.set()
        await self.ready.wait()


class _Adapter:
    """The AudioStream surface GatewayAudioOutput uses, over a ScriptedStream."""

    def __init__(self, s: ScriptedStream) -> None:
        self._s = s

    async def send(self, pcm: bytes) -> int:
        return await self._s.send(pcm)

    async def end_segment(self) -> int:
        return await self._s.end_segment()

    async def clear(self) -> None:
        await self._s.clear()

    def cancel(self) -> None:
        self._s.cancel()

    def events(self) -> AsyncIterator[PlaybackEvent]:
        return self._s.events_iter()


def frame(ms: int = 20) -> rtc.AudioFrame:
    n = RATE * ms // 1000
    return rtc.AudioFrame(data=b"\x01\x00" * n, sample_rate=RATE, num_channels=1, samples_per_channel=n)


async def test_played_segments_finish_with_the_gateways_positions_in_order() -> None:
    w = World()
    for _ in range(3):
        await w.out.capture_frame(frame())
    w.out.flush()
    await w.out.capture_frame(frame())
    w.out.flush()
    await w.stream.wait_sent(6)
    assert w.stream.sent == ["audio:320"] * 3 + ["end", "audio:320", "end"]
    w.stream.events.put_nowait(PlaybackStarted(1))
    w.stream.events.put_nowait(PlaybackFinished(1, 0.06, False))
    w.stream.events.put_nowait(PlaybackFinished(2, 0.02, False))
    async with asyncio.timeout(TIMEOUT):
        ev = await w.out.wait_for_playout()
    assert [(f.playback_position, f.interrupted) for f in w.finished] == [(0.06, False), (0.02, False)]
    assert ev.playback_position == 0.02
    await w.out.aclose()


async def test_a_flush_without_audio_sends_and_finishes_nothing() -> None:
    w = World()
    w.out.flush()
    w.out.flush()
    assert w.stream.sent == [] and w.finished == [] and w.opened == 0
    async with asyncio.timeout(TIMEOUT):
        await w.out.wait_for_playout()  # nothing counted: returns at once
    await w.out.aclose()


async def test_a_segment_interrupted_before_the_avatar_was_ready_finishes_at_zero() -> None:
    w = World()
    w.ready.clear()  # the avatar is not in the room yet
    capture = asyncio.ensure_future(w.out.capture_frame(frame()))
    async with asyncio.timeout(TIMEOUT):
        await w.waiting.wait()
    capture.cancel()  # the agent's forwarding task is cancelled by an interrupt
    with pytest.raises(asyncio.CancelledError):
        await capture
    w.out.flush()
    w.out.clear_buffer()
    async with asyncio.timeout(TIMEOUT):
        await w.out.wait_for_playout()
    assert [(f.playback_position, f.interrupted) for f in w.finished] == [(0.0, False)]
    assert w.stream.sent == []
    await w.out.aclose()


async def test_a_clear_is_sent_in_band_and_the_gateway_finishes_the_segments() -> None:
    w = World()
    await w.out.capture_frame(frame())
    w.out.clear_buffer()  # mid-segment: no segment end, a clear
    await w.out.capture_frame(frame())  # more audio of the cleared segment is dropped
    w.out.flush()
    await w.stream.wait_sent(2)
    w.stream.events.put_nowait(PlaybackFinished(1, 0.01, True))
    async with asyncio.timeout(TIMEOUT):
        ev = await w.out.wait_for_playout()
    assert (ev.playback_position, ev.interrupted) == (0.01, True)
    assert len(w.finished) == 1
    # the next segment is the gateway's segment 2
    await w.out.capture_frame(frame())
    w.out.flush()
    await w.stream.wait_sent(4)
    assert w.stream.sent == ["audio:320", "clear", "audio:320", "end"]
    w.stream.events.put_nowait(PlaybackFinished(2, 0.02, False))
    async with asyncio.timeout(TIMEOUT):
        ev = await w.out.wait_for_playout()
    assert (ev.playback_position, ev.interrupted) == (0.02, False)
    await w.out.aclose()


async def test_closing_finishes_what_is_unfinished() -> None:
    w = World()
    await w.out.capture_frame(frame())
    w.out.flush()
    await w.stream.wait_sent(2)
    await w.out.aclose()
    async with asyncio.timeout(TIMEOUT):
        ev = await w.out.wait_for_playout()
    assert ev.interrupted and len(w.finished) == 1
    with pytest.raises(Exception, match="closed"):
        await w.out.capture_frame(frame())


def test_gateway_and_api_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GATEWAY_ENV, "gw.example:50051")
    monkeypatch.setenv(API_KEY_ENV, "k-123")
    avatar = AvatarSession(provider="mock")
    assert avatar.gateway_target == "gw.example:50051" and avatar._api_key == "k-123"
    explicit = AvatarSession(gateway="other:1", api_key="mine")
    assert explicit.gateway_target == "other:1" and explicit._api_key == "mine"
    monkeypatch.delenv(GATEWAY_ENV)
    with pytest.raises(ValueError, match=GATEWAY_ENV):
        AvatarSession()


async def test_start_session_retries_keep_one_request_id() -> None:
    avatar = AvatarSession(gateway="unused:1")
    seen: list[str] = []

    class FlakyClient:
        async def start_session(self, provider: str, **kwargs: Any) -> Any:
            seen.append(kwargs["request_id"])
            if len(seen) < 3:  # the gateway says when to retry: at once
                raise GatewayError(grpc.StatusCode.UNAVAILABLE, "try again",
                                   details=[error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration())])
            return "session"

    avatar._client = cast(Any, FlakyClient())
    async with asyncio.timeout(TIMEOUT):
        assert await avatar._start_session("room", "agent") == "session"
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0]
