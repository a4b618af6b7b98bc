"""StreamAudio: the agent's speech in, playback events out.

The request side is read eagerly by its own task (so a clear_buffer behind queued audio acts at once); the response
side is written only by the handler coroutine, from one queue that carries playback events, the reader's outcome
and session changes. Every segment this stream opens gets exactly one playback_finished on every path: normal end,
clear_buffer, half-close, bad input, cancel, EndSession, idle timeout, shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from avatar.v1 import audio_stream_pb2 as pb
from avatar.v1 import session_pb2

from gateway import errors
from gateway.convert import audio_format_pb, duration
from gateway.metrics import ArrivalClock, GatewayMetrics
from gateway.resample import Resampler
from gateway.session import AvatarSession, NoticeEvent, SessionEndedEvent, State, StreamSink
from providers.base import PcmFormat
from providers.segments import SegmentFinished, SegmentStarted, SegmentUnderrun

log = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 8000, 48000
# after a stream-fatal input error: how long to keep draining the agent's messages before ending the call
ERROR_DRAIN_S = 2.0
# chunks shorter than this are gathered before they are resampled and queued: converting and queueing costs about
# the same for one sample as for 10 ms, so an agent sending tiny chunks would otherwise starve its own avatar
GATHER_S = 0.01


@dataclass(frozen=True, slots=True)
class _ReaderDone:
    error: errors.GatewayError | None


@dataclass(frozen=True, slots=True)
class GoAwayEvent:
    """The gateway is shutting down and will close the stream after `time_left_s`."""

    time_left_s: float


def validate_format(fmt: session_pb2.AudioFormat) -> PcmFormat:
    """The input format, or INVALID_ARGUMENT naming the bad field."""
    if fmt.encoding not in (session_pb2.AUDIO_ENCODING_UNSPECIFIED, session_pb2.AUDIO_ENCODING_PCM16LE):
        raise errors.invalid_argument("config.format.encoding", "only PCM16LE audio is supported",
                                      "UNSUPPORTED_ENCODING")
    if not MIN_RATE <= fmt.sample_rate_hz <= MAX_RATE:
        raise errors.invalid_argument(
            "config.format.sample_rate_hz",
            f"sample_rate_hz must be between {MIN_RATE} and {MAX_RATE}, got {fmt.sample_rate_hz}",
            "UNSUPPORTED_SAMPLE_RATE",
        )
    if fmt.channels not in (1, 2):
        raise errors.invalid_argument("config.format.channels",
                                      f"channels must be 1 or 2, got {fmt.channels}", "UNSUPPORTED_CHANNELS")
    return PcmFormat(fmt.sample_rate_hz, fmt.channels)


class StreamAudioCall:
    """One StreamAudio call bound to one session."""

    def __init__(self, session: AvatarSession, sink: StreamSink, fmt: PcmFormat, *, max_buffered_s: float,
                 max_chunk_bytes: int, metrics: GatewayMetrics | None = None) -> None:
        self.session = session
        self._sink = sink
        self._fmt = fmt
        self._max_buffered_s = max_buffered_s
        self._max_chunk = max_chunk_bytes
        self._frame_bytes = 2 * fmt.channels
        self._gather_bytes = max(1, round(fmt.sample_rate * GATHER_S)) * self._frame_bytes
        self._gathered = bytearray()  # tiny chunks of the open segment not yet converted (< GATHER_S of audio)
        self._local: dict[int, int] = {}  # session segment id -> stream segment id
        self._unfinished: set[int] = set()
        self._current: int | None = None  # open segment (session id)
        self._resampler: Resampler | None = None
        self._count = 0
        self._arrival = ArrivalClock()
        self._ns_per_frame = 1_000_000_000 / fmt.sample_rate  # one sample frame's duration
        self._metrics = metrics or GatewayMetrics()
        self._input_closed = asyncio.Event()

    def notify(self, event: GoAwayEvent) -> None:
        """Queue a gateway-level event for this stream's client."""
        self._sink.events.put_nowait(event)

    # -- reading ------------------------------------------------------------------------------------------------
    async def read(self, requests: AsyncIterator[pb.StreamAudioRequest]) -> None:
        """Apply every request in order; report the outcome on the event queue. Never raises (but cancellation)."""
        error: errors.GatewayError | None = None
        try:
            async for req in requests:
                await self._apply(req)
            if self._current is not None:  # half-close with an open segment: it plays out
                await self._end_segment()
        except errors.GatewayError as exc:
            error = exc
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            log.exception("session %s: audio stream reader failed", self.session.name)
            error = errors.internal()
        self._sink.events.put_nowait(_ReaderDone(error))
        if error is not None:
            # Keep reading (and dropping) what the agent still sends until it half-closes: if the call ended while
            # the agent is writing, its next write would fail and grpc.aio would replace our status with a bare
            # INTERNAL (grpc/grpc#36066). run() bounds how long this may take.
            with contextlib.suppress(Exception):
                async for _ in requests:
                    pass
            self._input_closed.set()

    async def _apply(self, req: pb.StreamAudioRequest) -> None:
        kind = req.WhichOneof("request")
        if self.session.state is not State.ACTIVE:
            return  # the session is ending: the SessionEnded event is on its way
        if kind == "audio":
            received = time.perf_counter_ns()
            await self._audio(req.audio.pcm, received)
        elif kind == "segment_end":
            await self._end_segment()
        elif kind == "clear_buffer":
            received = time.perf_counter_ns()
            self._current = None
            self._resampler = None
            self._gathered.clear()
            self._arrival.reset()
            await self.session.interrupt()
            self._metrics.interrupt.record(time.perf_counter_ns() - received)
        elif kind == "config":
            raise errors.invalid_argument("config", "config may only be sent once, as the first message",
                                          "CONFIG_ALREADY_SENT")
        else:
            raise errors.invalid_argument("request", "empty request: set one of config, audio, segment_end, "
                                                     "clear_buffer", "EMPTY_REQUEST")

    def _open(self) -> int:
        seg = self.session.open_segment()
        self._count += 1
        self._local[seg] = self._count
        self._unfinished.add(seg)
        self._current = seg
        self._resampler = Resampler(self._fmt, self.session.provider_format)
        return seg

    async def _audio(self, pcm: bytes, received_ns: int) -> None:
        if len(pcm) > self._max_chunk:
            raise errors.resource_exhausted(
                f"audio chunk of {len(pcm)} bytes is over the {self._max_chunk}-byte limit",
                "CHUNK_TOO_LARGE", "audio.pcm", {"limit_bytes": str(self._max_chunk)})
        if len(pcm) % self._frame_bytes:
            raise errors.invalid_argument(
                "audio.pcm", f"audio chunk of {len(pcm)} bytes is not a whole number of "
                f"{self._frame_bytes}-byte sample frames", "PARTIAL_SAMPLE_FRAME")
        self.session.touch()
        if not pcm:
            return
        buffered = self.session.book.buffered_seconds()
        if buffered > self._max_buffered_s:
            raise errors.resource_exhausted(
                f"{buffered:.1f}s of audio is already queued ahead of playout (limit {self._max_buffered_s:g}s)",
                "PLAYOUT_BUFFER_FULL", "playout_buffer", {"limit_ms": str(int(self._max_buffered_s * 1000))})
        seg = self._current if self._current is not None else self._open()
        assert self._resampler is not None
        if self._gathered or len(pcm) < self._gather_bytes:
            self._gathered += pcm
            if len(self._gathered) < self._gather_bytes:
                self._metrics.chunks += 1
                return
            pcm, self._gathered = bytes(self._gathered), bytearray()
        out = self._resampler.push(pcm)
        if out.size:
            await self.session.push_audio(seg, out)
        metrics = self._metrics
        metrics.chunks += 1
        metrics.hop.record(time.perf_counter_ns() - received_ns)
        metrics.arrival_lag.record(
            self._arrival.lag(received_ns, int(len(pcm) // self._frame_bytes * self._ns_per_frame)))

    async def _end_segment(self) -> None:
        seg = self._current if self._current is not None else self._open()
        assert self._resampler is not None
        if self._gathered:
            gathered = self._resampler.push(bytes(self._gathered))
            self._gathered.clear()
            if gathered.size:
                await self.session.push_audio(seg, gathered)
        tail = self._resampler.flush()
        if tail.size:
            await self.session.push_audio(seg, tail)
        self._current = None
        self._resampler = None
        self._arrival.reset()
        await self.session.end_segment(seg)

    # -- writing ------------------------------------------------------------------------------------------------
    async def run(self, requests: AsyncIterator[pb.StreamAudioRequest],
                  context: grpc.aio.ServicerContext[pb.StreamAudioRequest, pb.StreamAudioResponse]) -> None:
        """Serve the call until it completes; raises GatewayError for a stream-fatal input error."""
        session = self.session
        await context.write(pb.StreamAudioResponse(ready=pb.StreamReady(
            session=session.name,
            input_format=audio_format_pb(self._fmt),
            provider_format=audio_format_pb(session.provider_format),
            max_buffered_ms=int(self._max_buffered_s * 1000),
        )))
        reader = asyncio.get_running_loop().create_task(self.read(requests), name="audio-reader")
        half_closed = False
        try:
            while True:
                item = await self._sink.events.get()
                if isinstance(item, _ReaderDone):
                    if item.error is not None:
                        await self._finish_all()
                        await self._write_pending(context)
                        await context.write(pb.StreamAudioResponse(error=item.error.to_proto()))
                        item.error.sent_in_band = True
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(ERROR_DRAIN_S):
                                await self._input_closed.wait()
                        raise item.error
                    half_closed = True
                elif isinstance(item, SessionEndedEvent):
                    await self._write_pending(context)
                    await context.write(pb.StreamAudioResponse(session_ended=pb.SessionEnded(
                        reason=int(item.reason), detail=item.detail)))  # type: ignore[arg-type]
                    return
                else:
                    resp = self._response(item)
                    if resp is not None:
                        await context.write(resp)
                if half_closed and not self._unfinished:
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if self._unfinished:  # cancelled (or failed to write): stop now, still account every segment
                await self._finish_all()
            session.detach(self._sink)

    async def _finish_all(self) -> None:
        if self._unfinished:
            await self.session.interrupt()

    async def _write_pending(
        self, context: grpc.aio.ServicerContext[pb.StreamAudioRequest, pb.StreamAudioResponse]
    ) -> None:
        while not self._sink.events.empty():
            item = self._sink.events.get_nowait()
            if isinstance(item, (SegmentStarted, SegmentFinished, SegmentUnderrun)):
                resp = self._response(item)
                if resp is not None:
                    await context.write(resp)
            else:
                self._sink.events.put_nowait(item)
                return

    def _response(self, item: object) -> pb.StreamAudioResponse | None:
        if isinstance(item, GoAwayEvent):
            return pb.StreamAudioResponse(go_away=pb.GoAway(time_left=duration(item.time_left_s)))
        if isinstance(item, NoticeEvent):
            return pb.StreamAudioResponse(warning=pb.StreamWarning(reason=item.reason, message=item.message))
        if not isinstance(item, (SegmentStarted, SegmentFinished, SegmentUnderrun)):
            return None
        local = self._local.get(item.segment_id)
        if local is None:
            return None
        if isinstance(item, SegmentStarted):
            return pb.StreamAudioResponse(playback_started=pb.PlaybackStarted(segment_id=local))
        if isinstance(item, SegmentUnderrun):
            return pb.StreamAudioResponse(warning=pb.StreamWarning(
                reason="PLAYOUT_UNDERRUN",
                message=f"segment {local}: audio arrived slower than real time; silence was inserted"))
        self._unfinished.discard(item.segment_id)
        return pb.StreamAudioResponse(playback_finished=pb.PlaybackFinished(
            segment_id=local,
            playback_position=duration(item.position_s),
            interrupted=item.interrupted,
        ))
