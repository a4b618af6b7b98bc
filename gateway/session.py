"""One avatar session: its state machine, its provider session, its room publisher and its playback ledger.

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
import time
from dataclasses import dataclass, field

import numpy as np

from providers.base import PcmFormat, ProviderAdapter, ProviderError, ProviderSession, SessionSpec, VideoSpec
from providers.playback import PlaybackEvent, PlaybackFinished, PlaybackLedger
from providers.room_publisher import RoomJoinError, RoomPublisher

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
    # input-only: never echoed (they may hold a provider's per-customer settings)
    provider_options: dict[str, str] = field(default_factory=dict, repr=False)


class StreamSink:
    """Where a session sends the playback events of the audio stream attached to it."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[object] = asyncio.Queue()


@dataclass(frozen=True, slots=True)
class SessionEndedEvent:
    """The session ended under an attached stream."""

    reason: EndReason
    detail: str


class AvatarSession:
    """A running (or ended) session. All methods run on the gateway's event loop."""

    def __init__(self, params: SessionParams, adapter: ProviderAdapter, *, avatar_identity: str) -> None:
        self.params = params
        self.name = f"sessions/{params.session_id}"
        self.request_id = ""  # the StartSession idempotency key, if any
        self.adapter = adapter
        self.avatar_identity = avatar_identity
        self.provider_format: PcmFormat = adapter.info.audio_format
        self.state = State.STARTING
        self.end_reason = EndReason.NONE
        self.end_detail = ""
        self.create_time = time.time()
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.ledger = PlaybackLedger(self.provider_format.sample_rate, self._on_playback_event)
        self.output_rate = self.provider_format.sample_rate
        self._provider: ProviderSession | None = None
        self._publisher: RoomPublisher | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sink: StreamSink | None = None
        self._watchers: set[asyncio.Queue[None]] = set()
        self._ended = asyncio.Event()
        self._end_lock = asyncio.Lock()
        self._last_activity = time.monotonic()
        self._started_mono = time.monotonic()
        self._drained = asyncio.Event()
        self._playout_error: ProviderError | None = None
        self._detached = asyncio.Event()
        self._detached.set()

    # -- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self, spec: SessionSpec, *, headless: bool, lead_ms: int, timeout_s: float) -> None:
        """Start the provider, join and publish, wait for the first frame. On failure the session is FAILED,
        fully released, and the error propagates."""
        try:
            async with asyncio.timeout(timeout_s):
                self._provider = await self.adapter.start(spec)
                self._check_starting()
                self.provider_format = self._provider.input_format
                self.output_rate = self._provider.output_format.sample_rate
                self.ledger = PlaybackLedger(self.output_rate, self._on_playback_event)
                self._publisher = RoomPublisher(
                    audio=self._provider.output_format,
                    video=self._provider.video,
                    ledger=self.ledger,
                    room=None if headless else spec.room,
                    lead_ms=lead_ms,
                    video_delay_ms=round(self.params.video_delay_s * 1000),
                    clock_only=headless,
                    on_disconnected=self._room_lost,
                )
                await self._publisher.start()
                self._check_starting()
                playout = self._spawn(self._run_playout(), "playout")
                first_frame = self._publisher.first_frame
                await asyncio.wait((first_frame, playout), return_when=asyncio.FIRST_COMPLETED)
                if not first_frame.done():
                    raise self._playout_error or ProviderError("the provider stopped before its first frame",
                                                               retryable=True)
                self._check_starting()
        except BaseException as exc:
            if self.state in TERMINAL:  # ended (e.g. shutdown) while starting: release what start created since
                await self._release()
            else:
                await self.end(EndReason.START_FAILED, _describe_start_failure(exc))
            raise
        self.start_time = time.time()
        self._started_mono = time.monotonic()
        self._last_activity = time.monotonic()
        self._set_state(State.ACTIVE)
        self._spawn(self._run_timers(), "timers")

    async def _run_playout(self) -> None:
        assert self._provider is not None and self._publisher is not None
        try:
            await self._publisher.run(self._provider.frames())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = exc.reason if isinstance(exc, ProviderError) else "PLAYOUT_FAILED"
            log.warning("session %s playout stopped: %s", self.name, reason)
            self._playout_error = exc if isinstance(exc, ProviderError) else ProviderError(
                "the provider's frames failed", retryable=True, reason=reason)
            if self.state is State.ACTIVE:  # while starting, start() reports it
                self._spawn(self.end(EndReason.PROVIDER_ERROR, "the provider stopped: " + reason), "end")

    async def _run_timers(self) -> None:
        p = self.params
        while self.state is State.ACTIVE:
            now = time.monotonic()
            max_at = self._started_mono + p.max_duration_s
            idle_at = self._last_activity + p.idle_timeout_s
            if now >= max_at:
                self._spawn(self.end(EndReason.MAX_DURATION, f"max_duration {p.max_duration_s:g}s reached"), "end")
                return
            if now >= idle_at:
                if self.ledger.unfinished == 0:
                    self._spawn(self.end(EndReason.IDLE_TIMEOUT, f"no audio for {p.idle_timeout_s:g}s"), "end")
                    return
                self._last_activity = now  # still playing out: not idle
                continue
            await asyncio.sleep(min(max_at, idle_at) - now)

    def _check_starting(self) -> None:
        if self.state is not State.STARTING:
            raise SessionEndedWhileStarting(self.end_detail or "the session ended while it was starting")

    def _room_lost(self, reason: str) -> None:
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
        if self._publisher is not None:
            await self._publisher.interrupt()
        else:
            self.ledger.interrupt(0)
        if self._sink is not None:
            self._sink.events.put_nowait(SessionEndedEvent(self.end_reason, self.end_detail))
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and t.get_name() != "end"]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        provider, self._provider = self._provider, None
        if provider is not None:
            try:
                await provider.aclose()
            except Exception:
                log.exception("session %s: provider close failed", self.name)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.aclose()

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
        self._detached.clear()
        return self._sink

    def detach(self, sink: StreamSink) -> None:
        """Unbind a stream (its segments must all be finished)."""
        if self._sink is sink:
            self._sink = None
            self._detached.set()

    async def wait_detached(self) -> None:
        """Until no audio stream is attached."""
        await self._detached.wait()

    def touch(self) -> None:
        """Audio arrived: the session is not idle."""
        self._last_activity = time.monotonic()

    async def wait_drained(self) -> None:
        """Until every open segment has finished (buffered speech played out or interrupted)."""
        while self.ledger.unfinished and self.state not in TERMINAL:
            self._drained.clear()
            await self._drained.wait()

    def _on_playback_event(self, event: PlaybackEvent) -> None:
        if isinstance(event, PlaybackFinished) and not self.ledger.unfinished:
            self._drained.set()
        if self._sink is not None:
            self._sink.events.put_nowait(event)

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        """Queue provider-format audio for a segment."""
        if self._provider is None:
            return
        self.ledger.add_input(segment_id, pcm.size / self.provider_format.channels / self.provider_format.sample_rate)
        await self._provider.push_audio(segment_id, pcm)

    async def end_segment(self, segment_id: int) -> None:
        """The agent closed a segment."""
        self.ledger.end_input(segment_id)
        if self._provider is not None:
            await self._provider.end_segment(segment_id)

    async def interrupt(self) -> None:
        """Drop everything queued; every open segment finishes as interrupted."""
        if self._provider is not None:
            await self._provider.clear()
        if self._publisher is not None:
            await self._publisher.interrupt()
        else:
            self.ledger.interrupt(0)


def _describe_start_failure(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return f"the provider could not start: {exc}"
    if isinstance(exc, RoomJoinError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the session did not start in time"
    if isinstance(exc, asyncio.CancelledError):
        return "the start was cancelled"
    if isinstance(exc, SessionEndedWhileStarting):
        return str(exc)
    return "the session could not start"
