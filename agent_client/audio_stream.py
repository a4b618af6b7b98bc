"""The agent side of StreamAudio: send speech, end segments, interrupt, and read playback events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np
from avatar.v1 import audio_stream_pb2 as pb
from avatar.v1 import session_pb2

from agent_client.errors import GatewayError, from_rpc_error, from_status


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The first sample of segment `segment_id` left the gateway for the room."""

    segment_id: int


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """Segment `segment_id` is done; `position` seconds of it were heard."""

    segment_id: int
    position: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class StreamWarning:
    """A non-fatal condition."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class GoAway:
    """The gateway is shutting down; the stream ends within `time_left` seconds."""

    time_left: float


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session ended; the stream ends now."""

    reason: int
    detail: str


PlaybackEvent = PlaybackStarted | PlaybackFinished | StreamWarning | GoAway | SessionEnded


def _event(resp: pb.StreamAudioResponse) -> PlaybackEvent | None:
    kind = resp.WhichOneof("response")
    if kind == "error":
        raise from_status(resp.error)
    if kind == "playback_started":
        return PlaybackStarted(resp.playback_started.segment_id)
    if kind == "playback_finished":
        f = resp.playback_finished
        return PlaybackFinished(f.segment_id, f.playback_position.ToNanoseconds() / 1e9, f.interrupted)
    if kind == "warning":
        return StreamWarning(resp.warning.reason, resp.warning.message)
    if kind == "go_away":
        return GoAway(resp.go_away.time_left.ToNanoseconds() / 1e9)
    if kind == "session_ended":
        return SessionEnded(int(resp.session_ended.reason), resp.session_ended.detail)
    return None


class AudioStream:
    """One StreamAudio call. Use as `async with client.stream_audio(...) as stream:`; leaving the block half-closes
    (buffered speech plays out, the remaining events can still be read) unless `cancel()` was called.

    Segment ids follow the gateway's rule: the Nth segment opened on the stream has id N.
    """

    def __init__(self, call: Any, session: str, sample_rate: int, channels: int) -> None:
        self._call = call
        self._session = session
        self._fmt = session_pb2.AudioFormat(sample_rate_hz=sample_rate, channels=channels,
                                            encoding=session_pb2.AUDIO_ENCODING_PCM16LE)
        self.ready: pb.StreamReady | None = None
        self._segments = 0
        self._open = False
        self._writing = True
        self._error: GatewayError | None = None
        self._write_lock = asyncio.Lock()
        self._inflight: asyncio.Future[None] | None = None

    async def open(self) -> AudioStream:
        """Send the config and wait for `ready`. A failed or cancelled open cancels the call."""
        try:
            await self._write(pb.StreamAudioRequest(config=pb.StreamAudioConfig(session=self._session,
                                                                               format=self._fmt)))
            resp = await self._read()
        except BaseException:
            self._call.cancel()
            raise
        if resp is not None and resp.WhichOneof("response") == "error":
            self._call.cancel()  # the call's own status is the same one: nothing more to read
            raise from_status(resp.error)
        if resp is None or resp.WhichOneof("response") != "ready":
            raise GatewayError(grpc.StatusCode.INTERNAL, "the gateway did not acknowledge the stream config")
        self.ready = resp.ready
        return self

    async def __aenter__(self) -> AudioStream:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.cancel()
        else:
            await self.close()

    @property
    def current_segment(self) -> int:
        """Id of the open segment, or of the next one if none is open."""
        return self._segments if self._open else self._segments + 1

    async def send(self, pcm: bytes | np.ndarray) -> int:
        """Send audio of the current segment (opening one if needed); returns the segment id."""
        data = pcm.astype("<i2", copy=False).tobytes() if isinstance(pcm, np.ndarray) else pcm
        return await self._write(pb.StreamAudioRequest(audio=pb.AudioChunk(pcm=data)))

    async def end_segment(self) -> int:
        """Close the current segment (an empty one if none is open); returns its id."""
        return await self._write(pb.StreamAudioRequest(segment_end=pb.SegmentEnd()))

    async def clear(self) -> None:
        """Interrupt: every open or queued segment finishes as interrupted."""
        await self._write(pb.StreamAudioRequest(clear_buffer=pb.ClearBuffer()))

    async def close(self) -> None:
        """Half-close: what is buffered plays out; keep reading events until the iterator ends."""
        if self._writing:
            self._writing = False
            async with self._write_lock:
                if self._inflight is not None:
                    await asyncio.wait((self._inflight,))
            try:
                await self._call.done_writing()
            except grpc.aio.AioRpcError as err:
                raise from_rpc_error(err) from None

    def cancel(self) -> None:
        """Stop now."""
        self._writing = False
        self._call.cancel()

    def _account(self, kind: str | None) -> int:
        """Mirror the gateway's segment numbering for a message being sent now; the segment it belongs to."""
        if kind == "audio":
            if not self._open:
                self._segments += 1
                self._open = True
        elif kind == "segment_end":
            if not self._open:
                self._segments += 1
            self._open = False
        elif kind == "clear_buffer":
            self._open = False
        return self._segments

    async def _write(self, req: pb.StreamAudioRequest) -> int:
        """Send one message. Safe to call from several tasks at once and to cancel.

        gRPC allows one write in flight per call, and grpc.aio cancels the whole call when a task awaiting a write
        is cancelled; so writes are queued behind each other and each runs in its own task, which a cancelled
        caller leaves to finish (a TTS task can be cancelled mid-chunk and the stream stays usable). Segment ids are
        counted when a message is dispatched, so they match the gateway's whatever is cancelled. Returns the id of
        the segment the message belongs to.
        """
        if self._error is not None:
            raise self._error
        async with self._write_lock:
            if self._inflight is not None:
                await asyncio.wait((self._inflight,))  # never cancels the previous write
            self._inflight = write = asyncio.ensure_future(self._send(req))
            write.add_done_callback(_retrieved)  # a cancelled caller leaves nobody to read its error
            segment = self._account(req.WhichOneof("request"))
        await asyncio.shield(write)
        return segment

    async def _send(self, req: pb.StreamAudioRequest) -> None:
        try:
            await self._call.write(req)
        except grpc.aio.AioRpcError as err:
            raise self._error or from_rpc_error(err) from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            raise self._error or GatewayError(grpc.StatusCode.CANCELLED, "the stream is closed") from None

    async def _read(self) -> pb.StreamAudioResponse | None:
        try:
            resp = await self._call.read()
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        if resp is grpc.aio.EOF:
            code = await self._call.code()
            if code != grpc.StatusCode.OK:
                raise GatewayError(code, await self._call.details() or "")
            return None
        assert isinstance(resp, pb.StreamAudioResponse)
        return resp

    async def events(self) -> AsyncIterator[PlaybackEvent]:
        """Every event until the stream ends; raises GatewayError if it ends with an error status."""
        while True:
            try:
                resp = await self._read()
            except GatewayError:
                if self._error is not None:  # the gateway said why in-band; the status may have been mangled
                    raise self._error from None
                raise
            if resp is None:
                return
            try:
                event = _event(resp)
            except GatewayError as err:
                self._error = err
                continue  # the call's own status follows
            if event is not None:
                yield event

    def __aiter__(self) -> AsyncIterator[PlaybackEvent]:
        return self.events()


def _retrieved(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()
