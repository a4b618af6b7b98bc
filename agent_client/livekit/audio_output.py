"""The agent's audio sink: TTS audio over StreamAudio, the gateway's playback events back as the agent's.

livekit-agents' contract (`voice/io.py`): every segment counted by `capture_frame` gets exactly one
`on_playback_finished`, in order, including segments that never reached the gateway (an interrupt before the
avatar was ready, a capture cancelled on its way, a stream lost). A flush with nothing captured is no segment at
all and sends nothing. An interrupt (`clear_buffer`) is an in-band clear: the gateway finishes every open or
queued segment as interrupted with the position that was heard.

A stream that ends while the session lives (a dropped connection, a cancelled call) finishes its segments as
interrupted and is opened again for the next audio; only a stream that cannot be opened again (the session ended)
is final, and then every later utterance raises AvatarStreamError. A stream told `go_away` (the gateway process
serving it is stopping; the session may live on elsewhere) is moved before it is lost: the segment open on it is
finished there, the stream is half-closed so its audio plays out, and the next segment goes to a new stream once
the old one has ended (or its `time_left` and the clear timeout have passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from livekit import rtc
from livekit.agents.voice.io import AudioOutput, AudioOutputCapabilities

from agent_client.audio_stream import (
    AudioStream,
    GoAway,
    PlaybackFinished,
    PlaybackStarted,
    SessionEnded,
    StreamWarning,
)
from agent_client.errors import GatewayError

log = logging.getLogger(__name__)

StreamOpener = Callable[[int, int], Awaitable[AudioStream]]
CLEAR_TIMEOUT_S = 2.0  # livekit-agents' own fallback for an avatar that never answers a clear
REOPEN_DELAYS_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # while the gateway still holds the lost stream
OPEN_TIMEOUT_S = 5.0  # a stream the gateway has not acknowledged by then is given up and opened again


class AvatarStreamError(RuntimeError):
    """The audio stream to the gateway failed; the avatar no longer speaks."""


@dataclass(eq=False)
class _Segment:
    """One segment as the agent counts it."""

    gateway_id: int | None = None  # the gateway's segment id, once audio of it was sent
    pushed: float = 0.0  # seconds sent
    cleared: bool = False  # interrupted: later audio of it is dropped
    started: bool = False
    result: tuple[float, bool] | None = None  # (heard position, interrupted) once finished


@dataclass(eq=False)
class _Conn:
    """One StreamAudio call and the messages queued for it."""

    stream: AudioStream
    ops: asyncio.Queue[_Op]
    lost: bool = False
    sender: asyncio.Task[None] | None = None
    retire_by: float | None = None  # told go_away: loop time by which it must have ended
    closing: bool = False  # half-closed: no more audio goes to it
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Op:
    kind: str  # "audio" | "segment_end" | "clear" | "close"
    pcm: bytes = b""
    done: asyncio.Future[None] | None = None


class GatewayAudioOutput(AudioOutput):
    """An `AudioOutput` that streams to an avatar gateway session.

    `ready` is awaited before the first audio leaves (the avatar's video track is in the room); it raises if the
    avatar never came. `open_stream(sample_rate, channels)` opens the StreamAudio call; it is opened at the format
    of the first frame the agent produces (the gateway resamples), later frames of another format are resampled
    here to it.
    """

    def __init__(self, *, open_stream: StreamOpener, ready: Callable[[], Awaitable[None]],
                 label: str = "AvatarGateway") -> None:
        super().__init__(label=label, capabilities=AudioOutputCapabilities(pause=False), next_in_chain=None,
                         sample_rate=None)
        self._open_stream = open_stream
        self._ready = ready
        self._conn: _Conn | None = None
        self.reopened = 0  # streams opened again after one was lost
        self._format: tuple[int, int] | None = None
        self._resampler: rtc.AudioResampler | None = None
        self._resampled_from: tuple[int, int] | None = None
        self._open_lock = asyncio.Lock()
        self._segments: deque[_Segment] = deque()
        self._current: _Segment | None = None
        self._by_gateway: dict[int, _Segment] = {}
        self._gateway_count = 0  # segments opened on the stream (the gateway's numbering)
        self._gateway_open: int | None = None  # id of the gateway segment now open
        self._tasks: list[asyncio.Task[None]] = []
        self._error: BaseException | None = None
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self.last_sent = 0.0  # seconds of audio the agent gave the segment finished last

    # -- livekit-agents' AudioOutput
    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self._error is not None:
            raise AvatarStreamError(str(self._error)) from self._error
        await super().capture_frame(frame)  # counts the segment: from here it must be finished
        seg = self._current
        if seg is None:
            seg = self._current = _Segment()
            self._segments.append(seg)
        await self._ready()
        conn = await self._conn_for(frame)
        if seg.cleared or self._error is not None or conn is None:
            return
        pcm = self._convert(frame)
        if not pcm:
            return
        if self._gateway_open is None:
            self._gateway_count += 1
            self._gateway_open = self._gateway_count
        if seg.gateway_id is None:
            seg.gateway_id = self._gateway_open
            self._by_gateway[seg.gateway_id] = seg
        seg.pushed += len(pcm) / 2 / self._channels / self._rate
        done = asyncio.get_running_loop().create_future()
        conn.ops.put_nowait(_Op("audio", pcm, done))
        await asyncio.shield(done)  # back-pressure; a cancelled capture still leaves its chunk in order

    def flush(self) -> None:
        super().flush()
        seg, self._current = self._current, None
        if seg is None:
            return  # nothing was captured since the last flush: no segment
        if seg.gateway_id is None:
            self._resolve(seg, 0.0, seg.cleared)  # nothing of it reached the gateway
            return
        if self._gateway_open == seg.gateway_id and self._conn is not None:
            self._gateway_open = None
            self._conn.ops.put_nowait(_Op("segment_end"))
            self._close_if_retired(self._conn)

    def clear_buffer(self) -> None:
        pending = [s for s in self._segments if s.result is None]
        if not pending:
            return
        sent = False
        for seg in pending:
            seg.cleared = True
            if seg.gateway_id is None:
                self._resolve(seg, 0.0, True)
            else:
                sent = True
        if sent and self._conn is not None and self._error is None:
            self._gateway_open = None
            self._conn.ops.put_nowait(_Op("clear"))
            self._close_if_retired(self._conn)
            self._spawn(self._clear_fallback([s for s in pending if s.gateway_id is not None]))
        elif sent:
            for seg in pending:
                if seg.result is None:
                    self._resolve(seg, seg.pushed, True)

    # -- the stream
    @property
    def _rate(self) -> int:
        assert self._format is not None
        return self._format[0]

    @property
    def _channels(self) -> int:
        assert self._format is not None
        return self._format[1]

    async def _conn_for(self, frame: rtc.AudioFrame) -> _Conn | None:
        retired = self._conn
        if retired is not None and retired.retire_by is not None and self._gateway_open is None:
            await self._wait_ended(retired)  # a new segment: it goes to the stream that replaces this one
        if (self._conn is not None and not self._conn.lost) or self._closed:
            return self._conn
        async with self._open_lock:
            if (self._conn is None or self._conn.lost) and not self._closed:
                fmt = self._format or (frame.sample_rate, frame.num_channels)
                try:
                    stream = await self._open(fmt)
                except GatewayError as err:
                    self._fail(err)
                    raise AvatarStreamError(f"could not open the avatar's audio stream: {err}") from err
                if self._format is not None:
                    self.reopened += 1
                    log.info("avatar audio stream opened again")
                self._format = fmt
                self._conn = conn = _Conn(stream, asyncio.Queue())
                conn.sender = self._spawn(self._send_loop(conn))
                self._spawn(self._read_loop(conn))
        return self._conn

    async def _open(self, fmt: tuple[int, int]) -> AudioStream:
        """Open the stream; while a lost one is still open at the gateway (or it is unreachable), again."""
        for delay in (*REOPEN_DELAYS_S, None):
            try:
                try:
                    async with asyncio.timeout(OPEN_TIMEOUT_S):
                        return await self._open_stream(*fmt)
                except TimeoutError:
                    raise GatewayError(grpc.StatusCode.UNAVAILABLE, "the avatar gateway did not acknowledge the "
                                       f"audio stream in {OPEN_TIMEOUT_S:g} s") from None
            except GatewayError as err:
                busy = err.reason == "STREAM_ALREADY_OPEN" or err.code == grpc.StatusCode.UNAVAILABLE
                if delay is None or not busy or self._format is None:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _convert(self, frame: rtc.AudioFrame) -> bytes:
        fmt = (frame.sample_rate, frame.num_channels)
        if fmt == self._format:
            return bytes(frame.data)
        if fmt[1] != self._channels:
            raise AvatarStreamError(f"the agent's audio changed from {self._channels} to {fmt[1]} channels")
        if self._resampler is None or self._resampled_from != fmt:
            self._resampler = rtc.AudioResampler(input_rate=fmt[0], output_rate=self._rate, num_channels=fmt[1])
            self._resampled_from = fmt
        return b"".join(bytes(f.data) for f in self._resampler.push(frame))

    async def _send_loop(self, conn: _Conn) -> None:
        stream = conn.stream
        while not conn.lost:
            op = await conn.ops.get()
            try:
                if op.kind == "audio":
                    await stream.send(op.pcm)
                elif op.kind == "segment_end":
                    await stream.end_segment()
                elif op.kind == "clear":
                    await stream.clear()
                else:
                    await stream.close()
                    return
            except GatewayError as err:
                self._lose(conn, err)
            finally:
                if op.done is not None and not op.done.done():
                    op.done.set_result(None)

    async def _read_loop(self, conn: _Conn) -> None:
        try:
            await self._read_events(conn)
        finally:
            conn.ended.set()

    async def _read_events(self, conn: _Conn) -> None:
        try:
            async for event in conn.stream.events():
                if isinstance(event, PlaybackStarted):
                    seg = self._by_gateway.get(event.segment_id)
                    if seg is not None and not seg.started:
                        seg.started = True
                        self.on_playback_started(created_at=time.time())
                elif isinstance(event, PlaybackFinished):
                    seg = self._by_gateway.pop(event.segment_id, None)
                    if seg is not None and seg.result is None:
                        self._resolve(seg, event.position, event.interrupted)
                elif isinstance(event, StreamWarning):
                    log.warning("avatar gateway: %s: %s", event.reason, event.message)
                elif isinstance(event, GoAway):
                    log.info("avatar gateway is going away (stream ends within %.1f s): moving the stream",
                             event.time_left)
                    self._retire(conn, event.time_left)
                elif isinstance(event, SessionEnded):
                    log.warning("avatar session ended (reason %d): %s", event.reason, event.detail)
            if conn.closing:
                self._lose(conn, None)  # moved: every segment of it was finished
            else:
                self._lose(conn, AvatarStreamError("the avatar gateway closed the audio stream"))
        except GatewayError as err:
            self._lose(conn, err)

    # -- moving a stream told go_away
    def _retire(self, conn: _Conn, time_left_s: float) -> None:
        if conn.retire_by is None:
            conn.retire_by = asyncio.get_running_loop().time() + time_left_s + CLEAR_TIMEOUT_S
            self._close_if_retired(conn)

    def _close_if_retired(self, conn: _Conn) -> None:
        """Half-close a stream told go_away once no segment is open on it."""
        if conn.retire_by is not None and not conn.closing and not conn.lost and self._gateway_open is None:
            conn.closing = True
            conn.ops.put_nowait(_Op("close"))

    async def _wait_ended(self, conn: _Conn) -> None:
        """Until a retired stream has ended; past its deadline it is given up (its segments finish interrupted)."""
        assert conn.retire_by is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(conn.retire_by):
                await conn.ended.wait()
                return
        self._lose(conn, AvatarStreamError("the avatar gateway did not end a stream it said goodbye on"))

    async def _clear_fallback(self, segments: list[_Segment]) -> None:
        """A clear the gateway never answered (it always does; a broken connection might not): finish the
        segments as interrupted after livekit-agents' own timeout, so the agent never hangs."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLEAR_TIMEOUT_S):
                while any(s.result is None for s in segments):
                    await self._changed()
            return
        log.warning("the avatar gateway did not finish interrupted segments; finishing them here")
        for seg in segments:
            if seg.result is None:
                self._resolve(seg, 0.0, True)

    async def _changed(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    # -- accounting
    def _resolve(self, seg: _Segment, position: float, interrupted: bool) -> None:
        seg.result = (position, interrupted)
        while self._segments and self._segments[0].result is not None:
            done = self._segments.popleft()
            assert done.result is not None
            self.last_sent = done.pushed
            self.on_playback_finished(playback_position=done.result[0], interrupted=done.result[1])
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _lose(self, conn: _Conn, err: BaseException | None) -> None:
        """`conn`'s stream is gone (`err`: why, None if it ended as asked): finish the segments sent on it
        (interrupted; what was sent of a segment that had started playing), drop the rest of their audio, and open
        a new stream for the next audio."""
        if conn.lost or self._closed:
            return
        conn.lost = True
        if err is not None:
            log.warning("avatar audio stream lost (%s); it is opened again for the next speech", err)
        for seg in list(self._segments):
            if seg.result is None and seg.gateway_id is not None:
                seg.cleared = True
                self._resolve(seg, seg.pushed if seg.started else 0.0, True)
        self._gateway_open = None
        self._gateway_count = 0
        self._by_gateway.clear()
        _drain(conn.ops)
        conn.stream.cancel()
        if conn.sender is not None and conn.sender is not asyncio.current_task():
            conn.sender.cancel()

    def _fail(self, err: BaseException) -> None:
        """The stream is gone: finish every open segment (interrupted, what was sent) and refuse more audio."""
        if self._error is None and not self._closed:
            log.error("avatar audio stream failed: %s", err)
        if self._error is None:
            self._error = err
        for seg in list(self._segments):
            if seg.result is None:
                self._resolve(seg, 0.0 if seg.gateway_id is None or not seg.started else seg.pushed, True)
        if self._conn is not None:
            self._conn.lost = True
            _drain(self._conn.ops)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(task)
        return task

    async def aclose(self, reason: BaseException | None = None) -> None:
        """Stop streaming: cancel the stream now; every unfinished segment finishes interrupted. Later audio
        raises AvatarStreamError (from `reason`, if given)."""
        if self._closed:
            return
        self._closed = True
        self._fail(reason or AvatarStreamError("the avatar session is closed"))
        if self._conn is not None:
            self._conn.stream.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


def _drain(ops: asyncio.Queue[_Op]) -> None:
    while not ops.empty():
        op = ops.get_nowait()
        if op.done is not None and not op.done.done():
            op.done.set_result(None)
