"""The room audio transport: a session that takes its agent's speech over LiveKit's data-stream avatar protocol.

An unmodified livekit-agents agent (`DataStreamAudioOutput(destination_identity=<the avatar identity>)`) sends one
`lk.audio_stream` byte stream per speech segment to the avatar participant and calls `lk.clear_buffer` to
interrupt; the avatar answers with `lk.playback_started` / `lk.playback_finished` calls carrying exactly the stock
payload. Every stream becomes one segment of the session's book, so each one gets exactly one playback-finished,
in order, whatever happens to it (played, superseded, cleared, refused, cut off by the session's end).

Only the session's agent is listened to. A stream from anyone else is closed unread; a stream from the agent with a
format the gateway cannot play is refused (its segment finishes at position 0, so the agent does not wait for it).
A stream whose trailer never comes ends when the next stream's header arrives or after `STREAM_IDLE_S` without
data, the two ways livekit-agents' own receiver recovers from a lost trailer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator

from livekit import rtc

from gateway.framed_audio import FRAMED_FORMAT, FRAMING_ATTRIBUTE, FramedAudio, FramingError
from gateway.resample import Resampler
from gateway.session import AvatarSession, SessionEndedEvent, State, StreamSink
from providers.base import PcmFormat
from providers.segments import SegmentFinished, SegmentStarted

log = logging.getLogger(__name__)

AUDIO_STREAM_TOPIC = "lk.audio_stream"
RPC_CLEAR_BUFFER = "lk.clear_buffer"
RPC_PLAYBACK_STARTED = "lk.playback_started"
RPC_PLAYBACK_FINISHED = "lk.playback_finished"
STREAM_IDLE_S = 10.0  # no chunk and no trailer for this long: the trailer was lost, the segment has ended
SUPERSEDED_DRAIN_S = 0.2  # a stream superseded by a newer one ends after this long without a chunk
NOTIFY_ATTEMPTS = 3  # a playback notification is tried this many times, NOTIFY_RETRY_S apart
NOTIFY_RETRY_S = 0.1
CLOSE_FLUSH_S = 2.0  # at the session's end, how long the last notifications may take before the avatar leaves
BACKPRESSURE_POLL_S = 0.05  # while more than max_buffered_s is queued ahead of playout, reading pauses
RATES = (8000, 48000)


class StreamRefused(Exception):
    """A stream the gateway cannot play (its attributes say why)."""


def stream_format(attributes: dict[str, str] | None) -> PcmFormat:
    """The PCM format a stream's attributes declare, or StreamRefused."""
    attrs = attributes or {}
    try:
        rate, channels = int(attrs["sample_rate"]), int(attrs["num_channels"])
    except (KeyError, ValueError):
        raise StreamRefused("the stream needs integer sample_rate and num_channels attributes") from None
    if not RATES[0] <= rate <= RATES[1]:
        raise StreamRefused(f"sample_rate must be {RATES[0]} to {RATES[1]}, got {rate}")
    if channels not in (1, 2):
        raise StreamRefused(f"num_channels must be 1 or 2, got {channels}")
    return PcmFormat(rate, channels)


def finished_payload(event: SegmentFinished) -> str:
    """`lk.playback_finished`'s payload, exactly as livekit-agents parses it (no other key)."""
    return json.dumps({"playback_position": event.position_s, "interrupted": event.interrupted})


class RoomAudioInput:
    """Feeds one session from its agent's `lk.audio_stream`s and reports playback back to the agent.

    `bind` runs when the avatar has joined the room (before it publishes), `activate` when the session is ACTIVE,
    `aclose` when the session releases (after its last segments finished, before the avatar leaves)."""

    def __init__(self, session: AvatarSession, *, max_buffered_s: float) -> None:
        self._session = session
        self._agent = session.params.agent_identity
        self._max_buffered_s = max_buffered_s
        self._room: rtc.Room | None = None
        self._sink: StreamSink | None = None
        self._pending: deque[rtc.ByteStreamReader] = deque()  # streams whose header came, in order
        self._reading: rtc.ByteStreamReader | None = None
        self._changed = asyncio.Event()  # a stream or a clear is waiting
        self._newer = asyncio.Event()  # a newer stream began while one is read: the open one's trailer was lost
        self._clearing = asyncio.Event()  # a clear is waiting: the stream being read stops now
        self._clears: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._started_supported = True  # the agent registered lk.playback_started (only with wait_playback_start)
        self.streams_refused = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def bind(self, room: rtc.Room) -> None:
        """Listen on the avatar's room connection (RoomConnection's on_joined)."""
        self._room = room
        room.register_byte_stream_handler(AUDIO_STREAM_TOPIC, self._on_stream)
        room.local_participant.register_rpc_method(RPC_CLEAR_BUFFER, self._on_clear)

    def activate(self) -> None:
        """The session is ACTIVE: play the streams and report their playback."""
        sink = self._session.attach()
        if sink is None:  # StreamAudio is refused on room-transport sessions, so this cannot happen
            raise RuntimeError(f"session {self._session.name} already has an audio input")
        self._sink = sink
        self._spawn(self._receive(), "room-audio-receive")
        self._sender = self._spawn(self._notify(sink), "room-audio-notify")

    async def aclose(self) -> None:
        """Send what is left to the agent (bounded), stop listening, end every task. Idempotent."""
        if self._sender is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(CLOSE_FLUSH_S):
                    await asyncio.shield(self._sender)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for reader in self._pending:
            reader.close()
        self._pending.clear()
        for fut in self._clears:
            if not fut.done():
                fut.set_result(None)
        room, self._room = self._room, None
        if room is not None:
            room.unregister_byte_stream_handler(AUDIO_STREAM_TOPIC)
            with contextlib.suppress(Exception):
                room.local_participant.unregister_rpc_method(RPC_CLEAR_BUFFER)
        if self._sink is not None:
            self._session.detach(self._sink)
            self._sink = None

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the agent's side ---------------------------------------------------------------------------------------
    def _on_stream(self, reader: rtc.ByteStreamReader, sender: str) -> None:
        if sender != self._agent:
            log.warning("session %s: ignored an audio stream from %r, not the session's agent", self._session.name,
                        sender[:64])
            reader.close()
            return
        self._pending.append(reader)
        if self._reading is not None:  # the agent never overlaps its streams
            self._newer.set()
        self._changed.set()

    async def _on_clear(self, data: rtc.RpcInvocationData) -> str:
        if data.caller_identity != self._agent:
            log.warning("session %s: ignored lk.clear_buffer from %r, not the session's agent", self._session.name,
                        data.caller_identity[:64])
            return "reject"
        done = asyncio.get_running_loop().create_future()
        self._clears.append(done)
        self._clearing.set()
        self._changed.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_FLUSH_S):  # the receiver applies it at its next step; never hang a call
                await done
        return "ok"

    async def _receive(self) -> None:
        """The one task that moves audio into the session, so a clear can never race a push."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            while self._clears or self._pending:
                try:
                    if self._clears:
                        await self._clear()
                    else:
                        await self._play(self._pending.popleft())
                except Exception:  # one bad stream must not stop the session's input; its segment is still owed
                    log.exception("session %s: room audio input failed on a stream", self._session.name)
                    await self._session.interrupt()
                    self._answer_clears()

    async def _clear(self) -> None:
        session = self._session
        while self._pending:  # sent before the clear: part of the interrupted speech, each still owed a finish
            self._pending.popleft().close()
            if session.state is State.ACTIVE:
                session.open_segment()
        await session.interrupt()
        self._answer_clears()

    def _answer_clears(self) -> None:
        clears, self._clears = self._clears, []
        self._clearing.clear()
        for fut in clears:
            if not fut.done():
                fut.set_result(None)

    async def _play(self, reader: rtc.ByteStreamReader) -> None:
        session = self._session
        if session.state is not State.ACTIVE:
            reader.close()
            return
        self._newer.clear()
        segment = session.open_segment()
        attributes = reader.info.attributes or {}
        framing = attributes.get(FRAMING_ATTRIBUTE)
        framed = FramedAudio() if framing == "1" else None
        try:
            if framing is not None and framed is None:
                raise StreamRefused(f"unknown {FRAMING_ATTRIBUTE} {framing[:16]!r} (only framing 1 is read)")
            fmt = FRAMED_FORMAT if framed is not None else stream_format(attributes)
        except StreamRefused as exc:
            self.streams_refused += 1
            log.warning("session %s: refused an audio stream: %s", session.name, exc)
            reader.close()
            await session.end_segment(segment)  # no audio: it finishes at 0, in its turn
            return
        resampler = Resampler(fmt, session.provider_format)
        frame_bytes = 2 * fmt.channels
        carry = b""  # a chunk may end inside a sample frame: its bytes wait for the next chunk
        self._reading = reader
        cleared = False
        try:
            async for chunk in self._chunks(reader):
                if framed is not None:
                    try:
                        chunk = framed.feed(chunk)
                    except FramingError as exc:
                        log.warning("session %s: a framed audio stream is corrupt (%s); its rest is dropped",
                                    session.name, exc)
                        break
                data = carry + chunk
                whole = len(data) - len(data) % frame_bytes
                carry = data[whole:]
                if whole:
                    session.touch()
                    if not await self._room_for_more():
                        break
                    out = resampler.push(data[:whole])
                    if out.size:
                        await session.push_audio(segment, out)
            cleared = bool(self._clears)
        finally:
            self._reading = None
            reader.close()
        if cleared or not session.book.is_open(segment):
            return  # the clear finishes it
        if carry:
            log.warning("session %s: an audio stream ended inside a sample frame; %d byte(s) dropped", session.name,
                        len(carry))
        tail = resampler.flush()
        if tail.size:
            await session.push_audio(segment, tail)
        await session.end_segment(segment)

    async def _chunks(self, reader: rtc.ByteStreamReader) -> AsyncIterator[bytes]:
        """The stream's chunks until its trailer, a clear, STREAM_IDLE_S of silence, or (once a newer stream began)
        SUPERSEDED_DRAIN_S without a chunk: the SDK may hand over a stream's last chunks after the next header."""
        clearing = asyncio.ensure_future(self._clearing.wait())
        newer = asyncio.ensure_future(self._newer.wait())
        superseded = False
        try:
            while True:
                chunk = asyncio.ensure_future(anext(reader))
                waits = {chunk, clearing} if superseded else {chunk, clearing, newer}
                try:
                    done, _ = await asyncio.wait(waits, timeout=SUPERSEDED_DRAIN_S if superseded else STREAM_IDLE_S,
                                                 return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    chunk.cancel()
                    raise
                if chunk in done:
                    try:
                        yield chunk.result()
                    except (StopAsyncIteration, rtc.StreamError):
                        return
                    continue
                chunk.cancel()
                if clearing in done:
                    return
                if newer in done and not superseded:  # take what this stream already sent, then end it
                    superseded = True
                    continue
                why = "a newer stream began" if superseded else f"no data for {STREAM_IDLE_S:g}s"
                log.warning("session %s: an audio stream ended without its trailer (%s)", self._session.name, why)
                return
        finally:
            clearing.cancel()
            newer.cancel()

    async def _room_for_more(self) -> bool:
        """Wait while the playout queue is full; False if a clear came meanwhile."""
        book = self._session.book
        while book.buffered_seconds() > self._max_buffered_s and not self._clearing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BACKPRESSURE_POLL_S):
                    await self._clearing.wait()
        return not self._clearing.is_set()

    # -- back to the agent --------------------------------------------------------------------------------------
    async def _notify(self, sink: StreamSink) -> None:
        """Each playback event, in order, as the stock avatar protocol's RPC to the agent."""
        while True:
            event = await sink.events.get()
            if isinstance(event, SessionEndedEvent):
                return
            if isinstance(event, SegmentFinished):
                await self._call(RPC_PLAYBACK_FINISHED, finished_payload(event))
            elif isinstance(event, SegmentStarted) and self._started_supported:
                await self._call(RPC_PLAYBACK_STARTED, "")

    async def _call(self, method: str, payload: str) -> None:
        room = self._room
        if room is None:
            return
        for attempt in range(1, NOTIFY_ATTEMPTS + 1):
            try:
                await room.local_participant.perform_rpc(destination_identity=self._agent, method=method,
                                                         payload=payload)
                return
            except rtc.RpcError as exc:
                if exc.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD and method == RPC_PLAYBACK_STARTED:
                    self._started_supported = False  # the agent approximates it itself: never ask again
                    return
                if attempt == NOTIFY_ATTEMPTS:
                    log.warning("session %s: %s to the agent failed %d times (%s)", self._session.name, method,
                                attempt, exc.message)
                    return
            except Exception as exc:
                log.warning("session %s: %s to the agent failed: %s", self._session.name, method,
                            type(exc).__name__)
                return
            await asyncio.sleep(NOTIFY_RETRY_S)
