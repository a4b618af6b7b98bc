"""One avatar session: its state machine, its segment book and the media pipeline it is handed.

States: STARTING -> ACTIVE -> ENDING -> ENDED, or -> FAILED from STARTING/ACTIVE/ENDING. Whatever path ends a
session (EndSession, idle timeout, max duration, provider failure, room loss, shutdown, a failed start), `end()`
runs once: every open segment gets its playback-finished, the provider session is stopped, the avatar leaves the
room, and every task the session spawned is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from providers.base import PcmFormat, ProviderError, ProviderFault, ProviderInfo, VideoSpec
from providers.pipeline import MediaPipeline
from providers.playout import PlayoutStats
from providers.room_connection import RoomJoinError
from providers.segments import SegmentBook, SegmentEvent, SegmentFinished

log = logging.getLogger(__name__)


class SessionEndedWhileStarting(Exception):
    """The session was ended (for example by shutdown) before its start completed."""


class State(enum.IntEnum):
    """Mirrors avatar.v1.SessionState."""

    STARTING = 1
    ACTIVE = 2
    ENDING = 3
    ENDED = 4
    FAILED = 5


class EndReason(enum.IntEnum):
    """Mirrors avatar.v1.EndReason."""

    NONE = 0
    CLIENT_REQUEST = 1
    IDLE_TIMEOUT = 2
    MAX_DURATION = 3
    PROVIDER_ERROR = 4
    SERVER_SHUTDOWN = 5
    ROOM_DISCONNECTED = 6
    START_FAILED = 7


class AudioTransport(enum.IntEnum):
    """Mirrors avatar.v1.AudioTransport: where the session takes its agent's speech from."""

    GRPC = 1  # StreamAudio calls
    ROOM = 2  # LiveKit's data-stream avatar protocol in the room (gateway.room_audio_input)


TERMINAL = (State.ENDED, State.FAILED)
_FAILURES = (EndReason.PROVIDER_ERROR, EndReason.ROOM_DISCONNECTED, EndReason.START_FAILED)


@dataclass(frozen=True, slots=True)
class SessionParams:
    """What StartSession asked for, validated."""

    session_id: str
    owner: str
    provider: str
    room_url: str
    room_name: str
    agent_identity: str
    avatar_id: str
    video: VideoSpec
    idle_timeout_s: float
    max_duration_s: float
    labels: dict[str, str] = field(default_factory=dict)
    video_delay_s: float = 0.0
    audio_transport: AudioTransport = AudioTransport.GRPC
    # input-only: never echoed (they may hold a provider's per-customer settings)
    provider_options: dict[str, str] = field(default_factory=dict, repr=False)


class StreamSink:
    """Where a session sends the playback events of the audio stream attached to it."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[object] = asyncio.Queue()


class AudioInput(Protocol):
    """A session's own source of agent speech (the room transport), bound for the session's whole life."""

    def activate(self) -> None:
        """The session is ACTIVE: start taking speech (attach to the session)."""

    async def aclose(self) -> None:
        """The session is releasing: deliver the last playback events (bounded), stop, detach."""


@dataclass(frozen=True, slots=True)
class Failover:
    """A provider that did not start the session before the one that did (StartSessionRequest.fallbacks)."""

    provider: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class NoticeEvent:
    """Something the attached stream's agent should know: sent as a StreamWarning."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionEndedEvent:
    """The session ended under an attached stream."""

    reason: EndReason
    detail: str


class AvatarSession:
    """A running (or ended) session. All methods run on the gateway's event loop."""

    def __init__(self, params: SessionParams, provider: ProviderInfo, *, avatar_identity: str) -> None:
        self.params = params
        self.name = f"sessions/{params.session_id}"
        self.request_id = ""  # the StartSession idempotency key, if any
        self.avatar_identity = avatar_identity
        self.provider_format: PcmFormat = provider.audio_format
        self.state = State.STARTING
        self.end_reason = EndReason.NONE
        self.end_detail = ""
        self.create_time = time.time()
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.book = SegmentBook(self._on_segment_event)
        self._pipeline: MediaPipeline | None = None
        self._last_stats = PlayoutStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sink: StreamSink | None = None
        self._watchers: set[asyncio.Queue[None]] = set()
        self._ended = asyncio.Event()
        self._end_lock = asyncio.Lock()
        self._last_activity = time.monotonic()
        self._started_mono = time.monotonic()
        self._drained = asyncio.Event()
        self._playout_error: ProviderError | None = None
        self._start_step: asyncio.Task[None] | None = None
        self._detached = asyncio.Event()
        self._detached.set()
        self._input: AudioInput | None = None
        self.failovers: list[Failover] = []  # providers tried before this one, in order
        self.idle_from_audio = True  # False: no idle timeout (the agent's audio goes straight to a vendor)
        self._untold: list[NoticeEvent] = []  # notices that came while no stream was attached (the latest 8)
        self._provider_since: float | None = None  # monotonic start of the provider's session, while it runs
        self._provider_used_s = 0.0

    def use_input(self, source: AudioInput) -> None:
        """Take the agent's speech from `source` instead of StreamAudio (before `start`)."""
        self._input = source

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self, pipeline: MediaPipeline, *, timeout_s: float) -> None:
        """Start the pipeline (provider, room), wait for the first frame. On failure the session is FAILED, fully
        released, and the error propagates. `end()` while starting cancels the start (SessionEndedWhileStarting)."""
        self._pipeline = pipeline
        step = asyncio.get_running_loop().create_task(self._start_pipeline(pipeline), name="start")
        self._start_step = step
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await step
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.state is not State.STARTING and (task is None or not task.cancelling()):
                    raise SessionEndedWhileStarting(self.end_detail or "the session ended while it was starting"
                                                    ) from None
                raise
        except BaseException as exc:
            if self.state is State.STARTING:
                await self.end(EndReason.START_FAILED, _describe_start_failure(exc))
            raise  # ended while starting: whoever ended it released everything
        self._start_step = None
        self.start_time = time.time()
        self._started_mono = time.monotonic()
        self._last_activity = time.monotonic()
        self._set_state(State.ACTIVE)
        self._spawn(self._run_timers(), "timers")
        if self._input is not None:
            self._input.activate()

    async def _start_pipeline(self, pipeline: MediaPipeline) -> None:
        self._provider_since = time.monotonic()  # a start that fails half-way may have started the vendor
        await pipeline.start()
        self.provider_format = pipeline.input_format
        playout = self._spawn(self._run_playout(pipeline), "playout")
        first_frame = pipeline.first_frame
        await asyncio.wait((first_frame, playout), return_when=asyncio.FIRST_COMPLETED)
        if not first_frame.done():
            raise self._playout_error or ProviderError.unavailable("the provider stopped before its first frame",
                                                                   "PROVIDER_STOPPED")

    @property
    def stats(self) -> PlayoutStats:
        """Media played so far (kept after the pipeline is released)."""
        return self._pipeline.stats if self._pipeline is not None else self._last_stats

    async def _run_playout(self, pipeline: MediaPipeline) -> None:
        try:
            await pipeline.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, ProviderError) else ProviderError.unavailable(
                "the provider's media failed", "PLAYOUT_FAILED")
            log.warning("session %s playout stopped: %s", self.name, error.reason)
            self._playout_error = error
            if self.state is State.ACTIVE:  # while starting, start() reports it
                # a provider that closed an idle session ended it as the gateway's own idle timeout would
                reason = EndReason.IDLE_TIMEOUT if error.fault is ProviderFault.IDLE else EndReason.PROVIDER_ERROR
                self._spawn(self.end(reason, f"the provider stopped ({error.reason}): {_caller_safe(error)}"), "end")

    async def _run_timers(self) -> None:
        p = self.params
        while self.state is State.ACTIVE:
            now = time.monotonic()
            max_at = self._started_mono + p.max_duration_s
            idle_at = self._last_activity + p.idle_timeout_s if self.idle_from_audio else math.inf
            if now >= max_at:
                self._spawn(self.end(EndReason.MAX_DURATION, f"max_duration {p.max_duration_s:g}s reached"), "end")
                return
            if now >= idle_at:
                if self.book.unfinished == 0:
                    self._spawn(self.end(EndReason.IDLE_TIMEOUT, f"no audio for {p.idle_timeout_s:g}s"), "end")
                    return
                self._last_activity = now  # still playing out: not idle
                continue
            await asyncio.sleep(min(max_at, idle_at) - now)

    def room_lost(self, reason: str) -> None:
        """The avatar's room connection dropped (RoomConnection's on_lost)."""
        if self.state in TERMINAL or self.state is State.ENDING:
            return
        self._spawn(self.end(EndReason.ROOM_DISCONNECTED, f"the avatar left the room ({reason})"), "end")

    async def end(self, reason: EndReason, detail: str) -> None:
        """End the session once; later calls wait for the first to finish. Never raises."""
        async with self._end_lock:
            if self.state in TERMINAL:
                return
            self.end_reason, self.end_detail = reason, detail
            self._set_state(State.ENDING)
            step, self._start_step = self._start_step, None
            if step is not None and step is not asyncio.current_task() and not step.done():
                step.cancel()  # the start stops wherever it is; what it made is released below
                await asyncio.wait([step])
            try:
                await self._release()
            except Exception:
                log.exception("session %s: error while releasing", self.name)
            self.end_time = time.time()
            failed = reason in _FAILURES
            self._set_state(State.FAILED if failed else State.ENDED)
            self._ended.set()
            log.info("session %s %s: %s", self.name, "failed" if failed else "ended", reason.name)

    async def _release(self) -> None:
        pipeline = self._pipeline
        if pipeline is not None:
            await pipeline.interrupt()
        self.book.finish_open()  # whatever the pipeline did, every open segment is finished now
        if self._sink is not None:
            self._sink.events.put_nowait(SessionEndedEvent(self.end_reason, self.end_detail))
        if self._input is not None:
            await self._input.aclose()  # its last playback events reach the agent before the avatar leaves
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and t.get_name() != "end"]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if pipeline is not None:
            self._last_stats = pipeline.stats
            self._pipeline = None
            try:
                await pipeline.aclose()
            except Exception:
                log.exception("session %s: pipeline close failed", self.name)
            finally:
                self._stop_provider_clock()

    @property
    def provider_seconds(self) -> float:
        """How long the provider's session has run (to its stop, or to now while it runs)."""
        since = self._provider_since
        return self._provider_used_s + (time.monotonic() - since if since is not None else 0.0)

    def _stop_provider_clock(self) -> None:
        since, self._provider_since = self._provider_since, None
        if since is not None:
            self._provider_used_s += time.monotonic() - since

    async def wait_ended(self) -> None:
        """Until the session is terminal."""
        await self._ended.wait()

    async def drain_tasks(self) -> None:
        """Await every task the session spawned (used at shutdown and by leak checks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: object, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- state and watchers -------------------------------------------------------------------------------------
    def _set_state(self, state: State) -> None:
        self.state = state
        for q in self._watchers:
            q.put_nowait(None)

    def watch(self) -> asyncio.Queue[None]:
        """A queue that gets an item at every state change; call unwatch when done."""
        q: asyncio.Queue[None] = asyncio.Queue()
        self._watchers.add(q)
        return q

    def unwatch(self, q: asyncio.Queue[None]) -> None:
        """Stop watching."""
        self._watchers.discard(q)

    # -- audio --------------------------------------------------------------------------------------------------
    def attach(self) -> StreamSink | None:
        """Bind an audio stream; None if one is already attached."""
        if self._sink is not None:
            return None
        self._sink = StreamSink()
        for notice in self._untold:
            self._sink.events.put_nowait(notice)
        self._untold.clear()
        self._detached.clear()
        if self._pipeline is not None:
            self._pipeline.stream_attached(True)
        return self._sink

    def notice(self, reason: str, message: str) -> None:
        """Tell the agent (a StreamWarning on its stream; kept for the next stream while none is attached)."""
        event = NoticeEvent(reason, message)
        log.warning("session %s: %s: %s", self.name, reason, message)
        if self._sink is not None:
            self._sink.events.put_nowait(event)
        else:
            self._untold = [*self._untold[-7:], event]

    def detach(self, sink: StreamSink) -> None:
        """Unbind a stream (its segments must all be finished)."""
        if self._sink is sink:
            self._sink = None
            self._detached.set()
            if self._pipeline is not None:
                self._pipeline.stream_attached(False)

    async def wait_detached(self) -> None:
        """Until no audio stream is attached."""
        await self._detached.wait()

    def touch(self) -> None:
        """Audio arrived: the session is not idle."""
        self._last_activity = time.monotonic()

    async def wait_drained(self) -> None:
        """Until every open segment has finished (buffered speech played out or interrupted)."""
        while self.book.unfinished and self.state not in TERMINAL:
            self._drained.clear()
            await self._drained.wait()

    def _on_segment_event(self, event: SegmentEvent) -> None:
        if isinstance(event, SegmentFinished) and not self.book.unfinished:
            self._drained.set()
        if self._sink is not None:
            self._sink.events.put_nowait(event)

    def open_segment(self) -> int:
        """Open a segment in the book; returns its session-wide id."""
        return self.book.open()

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        """Queue provider-format audio for a segment."""
        if self._pipeline is None:
            return
        fmt = self.provider_format
        self.book.add_input(segment_id, pcm.size / fmt.channels / fmt.sample_rate)
        await self._pipeline.push_audio(segment_id, pcm)

    async def end_segment(self, segment_id: int) -> None:
        """The agent closed a segment."""
        self.book.end_input(segment_id)
        if self._pipeline is not None:
            await self._pipeline.end_segment(segment_id)

    async def interrupt(self) -> None:
        """Drop everything queued; every open segment finishes as interrupted."""
        if self._pipeline is not None:
            await self._pipeline.interrupt()
        self.book.finish_open()


def _caller_safe(error: ProviderError) -> str:
    """The part of a provider error a caller may see."""
    if error.fault in (ProviderFault.AUTH, ProviderFault.INTERNAL):
        return "see the gateway's log"
    return error.message


def _describe_start_failure(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return f"the provider could not start ({exc.reason}): {_caller_safe(exc)}"
    if isinstance(exc, RoomJoinError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the session did not start in time"
    if isinstance(exc, asyncio.CancelledError):
        return "the start was cancelled"
    if isinstance(exc, SessionEndedWhileStarting):
        return str(exc)
    return "the session could not start"
