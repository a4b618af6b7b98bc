"""Exactly one playback_finished per segment, on every path, with the position actually heard.

Paths: normal end, empty segment, clear_buffer mid-segment, clear with several queued segments, half-close with an
open segment, cancel, EndSession during playback, idle timeout during a stream. Positions are checked against the
exact sample counts the gateway must have played (deterministic), never against wall-clock time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agent_client import (
    AudioStream,
    AvatarGatewayClient,
    GatewayError,
    GoAway,
    PlaybackEvent,
    PlaybackFinished,
    PlaybackStarted,
    SessionEnded,
)
from gateway.server import GatewayServer
from gateway.service import ANONYMOUS
from providers.base import ProviderSession, SessionSpec
from providers.mock.provider import MockProvider
from providers.registry import ProviderRegistry
from tests.conftest import chunks, speech, start_mock

WAIT = 20.0  # safety net only: a test that needs it has hung


async def send_speech(stream: AudioStream, seconds: float, *, seed: int = 1) -> None:
    for c in chunks(speech(seconds, seed=seed)):
        await stream.send(c)


async def next_event(it: object) -> PlaybackEvent:
    async with asyncio.timeout(WAIT):
        return await anext(it)  # type: ignore[call-overload, no-any-return]


async def until(it: object, want: type[PlaybackEvent], segment: int | None = None) -> list[PlaybackEvent]:
    """Read events until one of type `want` (for `segment`) arrives; returns every event read."""
    seen: list[PlaybackEvent] = []
    while True:
        ev = await next_event(it)
        seen.append(ev)
        if isinstance(ev, want) and (segment is None or getattr(ev, "segment_id", None) == segment):
            return seen


async def drain(stream: AudioStream) -> list[PlaybackEvent]:
    out: list[PlaybackEvent] = []
    async with asyncio.timeout(WAIT):
        async for ev in stream:
            out.append(ev)
    return out


def finishes(events: list[PlaybackEvent]) -> dict[int, PlaybackFinished]:
    """segment -> its finish; fails if any segment finished more than once."""
    fins = [e for e in events if isinstance(e, PlaybackFinished)]
    counts = Counter(f.segment_id for f in fins)
    assert all(n == 1 for n in counts.values()), f"duplicate playback_finished: {counts}"
    return {f.segment_id: f for f in fins}


async def stats(client: AvatarGatewayClient, name: str) -> tuple[int, int, int]:
    s = (await client.get_session(name)).stats
    return s.segments_opened, s.segments_finished, s.segments_interrupted


async def test_normal_end_reports_full_position(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    async with client.stream_audio(name, sample_rate=16000) as stream:
        await send_speech(stream, 0.75)
        assert await stream.end_segment() == 1
        await send_speech(stream, 0.5, seed=2)
        assert await stream.end_segment() == 2
    events = await drain(stream)
    fins = finishes(events)
    assert sorted(fins) == [1, 2]
    # 0.75 s and 0.5 s of 16 kHz input resample to exactly 18000 and 12000 samples at 24 kHz
    assert fins[1].position == pytest.approx(0.75, abs=1e-6) and not fins[1].interrupted
    assert fins[2].position == pytest.approx(0.5, abs=1e-6) and not fins[2].interrupted
    order = [(type(e).__name__, getattr(e, "segment_id", 0)) for e in events]
    assert order.index(("PlaybackStarted", 1)) < order.index(("PlaybackFinished", 1))
    assert order.index(("PlaybackFinished", 1)) < order.index(("PlaybackStarted", 2))
    assert await stats(client, name) == (2, 2, 0)


async def test_empty_segment_finishes_once_at_zero(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    async with client.stream_audio(name, sample_rate=16000) as stream:
        assert await stream.end_segment() == 1
        assert await stream.end_segment() == 2
    events = await drain(stream)
    fins = finishes(events)
    assert {k: (v.position, v.interrupted) for k, v in fins.items()} == {1: (0.0, False), 2: (0.0, False)}
    assert not [e for e in events if isinstance(e, PlaybackStarted)]


async def test_clear_mid_segment_interrupts_at_heard_position(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    async with client.stream_audio(name, sample_rate=16000) as stream:
        events = stream.events()
        await send_speech(stream, 3.0)
        seen = await until(events, PlaybackStarted, 1)
        await stream.clear()
        seen += await until(events, PlaybackFinished, 1)
        first = finishes(seen)[1]
        assert first.interrupted and 0.0 < first.position < 3.0
        # the stream goes on: a new segment after the interrupt plays out normally
        await send_speech(stream, 0.25, seed=3)
        assert await stream.end_segment() == 2
        seen += await until(events, PlaybackFinished, 2)
    seen += [e async for e in events]
    fins = finishes(seen)
    assert sorted(fins) == [1, 2]
    assert fins[2].position == pytest.approx(0.25, abs=1e-6) and not fins[2].interrupted
    assert await stats(client, name) == (2, 2, 1)


async def test_clear_with_several_queued_segments(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    async with client.stream_audio(name, sample_rate=16000) as stream:
        events = stream.events()
        await send_speech(stream, 1.0)
        await stream.end_segment()
        await send_speech(stream, 1.0, seed=2)
        await stream.end_segment()
        await send_speech(stream, 0.5, seed=3)  # left open
        seen = await until(events, PlaybackStarted, 1)
        await stream.clear()
        for seg in (1, 2, 3):
            if seg not in finishes(seen):
                seen += await until(events, PlaybackFinished, seg)
    seen += [e async for e in events]
    fins = finishes(seen)
    assert sorted(fins) == [1, 2, 3]
    assert all(f.interrupted for f in fins.values())
    assert fins[2].position == 0.0 and fins[3].position == 0.0
    assert 0.0 < fins[1].position < 1.0
    assert await stats(client, name) == (3, 3, 3)


async def test_half_close_plays_out_open_segment(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    stream = await client.stream_audio(name, sample_rate=16000).open()
    await send_speech(stream, 0.5)
    await stream.end_segment()
    await send_speech(stream, 0.3, seed=2)  # no segment_end: half-close ends it
    await stream.close()
    fins = finishes(await drain(stream))
    assert {k: (round(v.position, 6), v.interrupted) for k, v in fins.items()} == {1: (0.5, False), 2: (0.3, False)}
    assert await stats(client, name) == (2, 2, 0)


async def test_cancel_stops_now_and_still_accounts(gateway: GatewayServer, client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    session = gateway.manager.resolve(ANONYMOUS, name)
    stream = await client.stream_audio(name, sample_rate=16000).open()
    events = stream.events()
    await send_speech(stream, 3.0)
    await until(events, PlaybackStarted, 1)
    stream.cancel()
    async with asyncio.timeout(WAIT):
        await session.wait_detached()
    opened, finished, interrupted = await stats(client, name)
    assert (opened, finished, interrupted) == (1, 1, 1)
    assert session.book.unfinished == 0
    # nothing of the cancelled stream is still queued: a new stream starts clean with segment 1
    async with client.stream_audio(name, sample_rate=16000) as again:
        await send_speech(again, 0.2)
        await again.end_segment()
    fins = finishes(await drain(again))
    assert fins[1].position == pytest.approx(0.2, abs=1e-6) and not fins[1].interrupted


async def test_end_session_during_playback(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    stream = await client.stream_audio(name, sample_rate=16000).open()
    events = stream.events()
    await send_speech(stream, 2.0)
    await stream.end_segment()
    await send_speech(stream, 1.0, seed=2)
    await until(events, PlaybackStarted, 1)
    ended = await client.end_session(name)
    assert ended.state == 4  # ENDED
    rest = [e async for e in events]
    fins = finishes(rest)
    assert sorted(fins) == [1, 2] and all(f.interrupted for f in fins.values())
    assert isinstance(rest[-1], SessionEnded) and rest[-1].reason == 1  # CLIENT_REQUEST
    # and EndSession is idempotent
    again = await client.end_session(name)
    assert again.state == 4 and again.end_reason == 1


async def test_a_stream_opened_while_the_gateway_stops_is_told_go_away_at_once(
        make_gateway: Callable[..., Any]) -> None:
    server = await make_gateway(shutdown_grace_s=10.0)
    async with AvatarGatewayClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
        talking, quiet = await start_mock(client), await start_mock(client)
        stream = await client.stream_audio(talking, sample_rate=16000).open()
        await send_speech(stream, 2.0)
        await stream.end_segment()
        events = stream.events()
        assert await next_event(events) == PlaybackStarted(1)
        stopping = asyncio.create_task(server.stop())  # the talking session's speech plays out first
        going = await next_event(events)
        assert isinstance(going, GoAway) and 0 < going.time_left <= 10.0
        late = await client.stream_audio(quiet, sample_rate=16000).open()
        told = await next_event(late.events())
        assert isinstance(told, GoAway) and 0 < told.time_left <= going.time_left
        late.cancel()
        assert [type(e) for e in await until(events, SessionEnded)] == [PlaybackFinished, SessionEnded]
        async with asyncio.timeout(WAIT):
            await stopping


async def test_idle_timeout_ends_session_with_stream_open(client: AvatarGatewayClient) -> None:
    name = await start_mock(client, idle_timeout=0.3)
    stream = await client.stream_audio(name, sample_rate=16000).open()
    await send_speech(stream, 0.2)
    await stream.end_segment()
    events = await drain(stream)  # the stream stays open (no half-close) until the session ends
    fins = finishes(events)
    assert fins[1].position == pytest.approx(0.2, abs=1e-6) and not fins[1].interrupted
    assert isinstance(events[-1], SessionEnded) and events[-1].reason == 2  # IDLE_TIMEOUT
    session = await client.get_session(name)
    assert session.state == 4 and session.end_reason == 2


async def test_max_duration_ends_session(client: AvatarGatewayClient) -> None:
    name = await start_mock(client, max_duration=0.5)
    states = []
    async with asyncio.timeout(WAIT):
        async for s in client.watch_session(name):
            states.append((s.state, s.end_reason))
    assert states[0] == (2, 0) and states[-1] == (4, 3)  # ACTIVE ... ENDED by MAX_DURATION


async def test_second_stream_refused_then_allowed(client: AvatarGatewayClient) -> None:
    name = await start_mock(client)
    first = await client.stream_audio(name, sample_rate=16000).open()
    with pytest.raises(GatewayError) as err:
        await client.stream_audio(name, sample_rate=16000).open()
    assert err.value.reason == "STREAM_ALREADY_OPEN"
    await first.end_segment()
    await first.close()
    await drain(first)
    async with client.stream_audio(name, sample_rate=48000, channels=2) as second:
        await second.send(speech(0.1, 48000, channels=2).tobytes())
        await second.end_segment()
    fins = finishes(await drain(second))
    assert fins[1].position == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 2), (44100, 1), (48000, 2), (24000, 1)])
async def test_any_common_input_format_is_resampled_exactly(client: AvatarGatewayClient, rate: int,
                                                            channels: int) -> None:
    name = await start_mock(client)
    async with client.stream_audio(name, sample_rate=rate, channels=channels) as stream:
        for c in chunks(speech(0.4, rate, channels=channels), rate, channels=channels):
            await stream.send(c)
        await stream.end_segment()
    fins = finishes(await drain(stream))
    assert fins[1].position == pytest.approx(0.4, abs=1 / 24000) and not fins[1].interrupted


async def test_provider_options_reach_the_provider(client: AvatarGatewayClient) -> None:
    """The mock standing in for a 16 kHz provider: the session, `ready` and playout all use its rate, and audio
    already at that rate plays exactly."""
    session = await client.start_session("mock", room_name="test-room", agent_identity="agent-1",
                                         provider_options={"sample_rate": "16000", "seed": "3"})
    assert session.provider_audio_format.sample_rate_hz == 16000
    async with client.stream_audio(session.name, sample_rate=16000) as stream:
        assert stream.ready is not None and stream.ready.provider_format.sample_rate_hz == 16000
        await send_speech(stream, 0.4)
        await stream.end_segment()
    fins = finishes(await drain(stream))
    assert fins[1].position == pytest.approx(0.4, abs=1e-9) and not fins[1].interrupted
    assert (await client.get_session(session.name)).provider_audio_format.sample_rate_hz == 16000


async def test_concurrent_clear_and_cancelled_talker_keep_the_stream_usable(client: AvatarGatewayClient) -> None:
    """A TTS task streams while the agent's interruption handler clears, then the TTS task is cancelled mid-chunk:
    gRPC allows one write in flight per call and grpc.aio cancels the whole call when a write is cancelled, so the
    client must serialise writes and keep them running; the stream stays usable and accounting stays exact."""
    name = await start_mock(client)
    pieces = chunks(speech(2.0))
    async with client.stream_audio(name, sample_rate=16000) as stream:
        events = stream.events()

        async def talk() -> None:
            for piece in pieces:
                await stream.send(piece)

        for _ in range(5):
            talker = asyncio.create_task(talk())
            await asyncio.sleep(0)  # let the talker start writing
            await stream.clear()
            talker.cancel()
            await asyncio.gather(talker, return_exceptions=True)
        await stream.clear()
        await send_speech(stream, 0.2, seed=9)
        last = await stream.end_segment()
    fins = finishes([e async for e in events])
    assert fins[last].position == pytest.approx(0.2, abs=1e-6) and not fins[last].interrupted
    assert all(f.interrupted for seg, f in fins.items() if seg != last)
    opened, finished, _ = await stats(client, name)
    assert opened == finished == len(fins)


class CountingMock(MockProvider):
    """The mock, counting the audio pushes its sessions get."""

    def __init__(self) -> None:
        self.pushes = 0

    async def start(self, spec: SessionSpec) -> ProviderSession:
        session = await super().start(spec)
        counter = self
        original = session.push_audio

        async def push_audio(segment_id: int, pcm: np.ndarray) -> None:
            counter.pushes += 1
            await original(segment_id, pcm)

        session.push_audio = push_audio  # type: ignore[method-assign]
        return session


async def test_tiny_chunks_are_gathered_before_they_are_queued(make_gateway: Callable[..., Any]) -> None:
    """10,000 one-sample chunks (0.625 s at 16 kHz) reach the provider in 10 ms pieces, not one by one (each push
    costs about as much as a 10 ms one), and every sample is heard."""
    counting = CountingMock()
    server = await make_gateway(registry=ProviderRegistry([counting]))
    async with AvatarGatewayClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
        name = await start_mock(client, provider_options={"sample_rate": "16000"})
        samples = speech(0.625)
        async with client.stream_audio(name, sample_rate=16000) as stream:
            for i in range(samples.size):
                await stream.send(samples[i : i + 1].tobytes())
            await stream.end_segment()
        events = await drain(stream)
    [done] = [e for e in events if isinstance(e, PlaybackFinished)]
    assert done.position == pytest.approx(0.625, abs=1e-9) and not done.interrupted
    assert counting.pushes <= samples.size // 160 + 1, counting.pushes
