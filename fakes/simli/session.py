"""One fake Simli session: its websocket, its peer connection, its play queue, its caps and what it recorded.

Lifecycle (``serve`` runs in the websocket's aiohttp handler):

1. the client's JSON offer -> a negotiation task: an aiortc peer connection with no ICE server, the session's
   :class:`~fakes.simli.media.PlayoutAudioTrack` and :class:`~fakes.simli.media.FaceVideoTrack`, the answer (ICE
   gathering complete, candidates in the SDP) as JSON, then, once the peer connection is up (``ERROR: WebRTC
   connection failed`` if it fails) and ``start_delay`` later, the start reply (``START``, or e.g. ``RATE LIMIT`` /
   ``ERROR: ...`` which end the session, or nothing);
2. binary audio is queued, ``SKIP`` clears the queue, ``PLAY_IMMEDIATE`` replaces it, ``DONE`` ends the session;
3. ``maxSessionLength`` / ``maxIdleTime`` (from START; any audio message is activity) end it with
   ``CLOSING REASON: MAX|IDLE`` then ``STOP``;
4. however it ends (the first cause wins, see :class:`~fakes.simli.protocol.StopCause`), one end task sends the
   closing messages, closes the websocket and the peer connection; the handler waits for it and for every task the
   session started, so a closed session leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from providers.mock.face import BlinkSchedule

from . import protocol as p
from .changes import Changes
from .media import FaceVideoTrack, PlayoutAudioTrack, RendererCache, close_peer_connection
from .playout import Playout
from .protocol import INPUT_RATE, StopCause
from .token_request import SessionParams

__all__ = ["FakeSimliSession", "ReceivedMessage", "SessionOptions"]

logger = logging.getLogger("fakes.simli")

MessageKind = Literal["offer", "audio", "immediate", "skip", "done", "control", "text"]
_WS_CLOSE_TIMEOUT = 5.0
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SessionOptions:
    """The server's knobs as they were when the session's websocket opened."""

    fps: float
    start_delay: float
    start_reply: str | None
    silence_threshold: int
    blink: bool
    start_after_connected: bool = True


@dataclass(frozen=True)
class ReceivedMessage:
    """A websocket message from the client: when (loop time), what, its size in bytes (audio) or characters."""

    at: float
    kind: MessageKind
    size: int
    text: str | None = None


class FakeSimliSession:
    """State and fault injection of one session; created by :class:`~fakes.simli.server.FakeSimli`."""

    def __init__(self, *, index: int, token: str, api_key: str, config: dict[str, Any], params: SessionParams,
                 options: SessionOptions, renderers: RendererCache, changes: Changes) -> None:
        self.index = index
        self.token = token
        self.api_key = api_key
        self.config = config  # the /compose/token body, as received
        self.params = params
        self.options = options
        self._renderers = renderers
        self._changes = changes
        loop = asyncio.get_running_loop()
        self._clock: Callable[[], float] = loop.time
        self.playout = Playout(self._clock, silence_threshold=options.silence_threshold,
                               on_speak=self._on_speak, on_silent=self._on_silent)

        # Timestamps, on the event loop's clock.
        self.created_at = self._clock()
        self.answered_at: float | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.last_audio_at: float | None = None
        self.answered = asyncio.Event()
        self.media_connected = asyncio.Event()  # the peer connection reached "connected"
        self._media_settled = asyncio.Event()  # ... or "failed" / "closed"
        self.started = asyncio.Event()
        self.closed = asyncio.Event()

        # What the client sent.
        self.messages: list[ReceivedMessage] = []
        self.received_pcm = bytearray()  # every audio byte, PLAY_IMMEDIATE payloads included, in order
        self.audio_messages = 0
        self.skips = 0
        self.immediates = 0
        self.done_received = False
        self.controls: list[bytes | str] = []  # CAM_ (binary), BG_ / FG_ (text)
        self.offer: dict[str, Any] | None = None

        # What the fake sent.
        self.sent_texts: list[str] = []
        self.speaks = 0
        self.silents = 0
        self.audio_frames_sent = 0
        self.video_frames_sent = 0
        self.video_levels: list[int] = []  # the mouth level of every video frame sent, in order

        self.stop_cause: StopCause | None = None
        self.error_message: str | None = None  # the ERROR / RATE LIMIT text the fake sent
        self.ws_open = False
        self.pc_open = False
        self.pc: RTCPeerConnection | None = None

        self._ws: web.WebSocketResponse | None = None
        self._request: web.Request | None = None
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._negotiation: asyncio.Task[None] | None = None
        self._timers: asyncio.Task[None] | None = None
        self._end_task: asyncio.Task[None] | None = None
        self._pc_close_task: asyncio.Task[None] | None = None
        self._audio_track: PlayoutAudioTrack | None = None
        self._video_track: FaceVideoTrack | None = None

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """The websocket or the peer connection is still open."""
        return self.ws_open or self.pc_open

    @property
    def ending(self) -> bool:
        return self._end_task is not None

    @property
    def received_audio_bytes(self) -> int:
        return len(self.received_pcm)

    @property
    def dropped_samples(self) -> int:
        """Queued samples dropped by SKIP / PLAY_IMMEDIATE."""
        return self.playout.dropped_samples

    @property
    def played_samples(self) -> int:
        """Queued samples that were played out (taken off the queue by the tracks)."""
        return self.playout.played_samples

    async def wait_for(
        self,
        predicate: Callable[[FakeSimliSession], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for the whole wait
    ) -> None:
        """Wait (bounded) until ``predicate(self)`` holds; every recorded change re-checks it."""
        await self._changes.wait_for(lambda: predicate(self), timeout)

    async def wait_closed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline for the wait
        async with asyncio.timeout(timeout):
            await self.closed.wait()

    def _notify(self) -> None:
        self._changes.notify()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"fake-simli-{self.index}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- fault injection -----------------------------------------------------------------------------------------
    async def send_text(self, text: str) -> bool:
        """Send any text message (e.g. ``ACK``, ``WARNING: ...``, ``ENDFRAME``); False when the socket is closed."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        async with self._send_lock:
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        self.sent_texts.append(text)
        self._notify()
        return True

    async def send_error(self, message: str = "Internal server error") -> None:
        """``ERROR: <message>``, then close the websocket and the peer connection (cause ERROR)."""
        await self._end_and_wait(StopCause.ERROR, [p.ERROR_PREFIX + message], error=p.ERROR_PREFIX + message)

    async def end(self, reason: str = "MAX") -> None:
        """``CLOSING REASON: <reason>`` then ``STOP``, as the session caps do (cause IDLE / MAX / SERVER_CLOSED)."""
        cause = StopCause(reason) if reason in (StopCause.IDLE, StopCause.MAX) else StopCause.SERVER_CLOSED
        await self._end_and_wait(cause, [p.CLOSING_REASON + reason, p.STOP])

    async def abort_websocket(self, code: int | None = None) -> None:
        """Drop the websocket abruptly: the TCP connection when ``code`` is None, else a close frame with ``code``
        (anything but 1000/1001 reads as an error to the client). Cause ABORTED."""
        self._request_end(StopCause.ABORTED, (), close_code=code, abort=code is None)
        await self._wait_end()

    async def kill_webrtc(self) -> None:
        """Close the peer connection (RTCP BYE ends the client's tracks) and leave the websocket open. Cause KILLED."""
        if self.pc is None:
            raise RuntimeError("the session has no peer connection yet")
        if self.stop_cause is None:
            self.stop_cause = StopCause.KILLED
        # The caps keep running: the websocket is still open and still ends as a real session's would.
        await self._close_media()

    # -- the websocket -------------------------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=_WS_CLOSE_TIMEOUT, max_msg_size=_MAX_MESSAGE_BYTES)
        self._ws, self._request = ws, request
        try:
            await ws.prepare(request)
            self.ws_open = True
            self._notify()
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    self._on_binary(message.data)
                else:  # ERROR
                    break
        finally:
            await self._shutdown()
        return ws

    async def _shutdown(self) -> None:
        """The websocket is closed (or closing): end the session and wait for everything it started."""
        end = self._request_end(StopCause.CLIENT_GONE, (), close_code=WSCloseCode.OK)
        try:
            await asyncio.shield(end)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._close_media()
            self.ws_open = False
            self.ended_at = self._clock()
            self.closed.set()
            self._notify()

    def _on_text(self, text: str) -> None:
        now = self._clock()
        if text.lstrip().startswith("{") and self.offer is None and not self.ending and self._pc_close_task is None:
            self._record(now, "offer", len(text), text)
            try:
                offer = json.loads(text)
                if not isinstance(offer, dict):
                    raise TypeError("the offer is not an object")
                description = RTCSessionDescription(sdp=offer["sdp"], type=offer["type"])
            except (ValueError, TypeError, KeyError) as exc:
                self._request_end(StopCause.ERROR, [p.ERROR_PREFIX + f"Invalid offer: {exc}"])
                return
            self.offer = offer
            self._negotiation = self._spawn(self._negotiate(description), "negotiate")
        elif text == p.SKIP:
            self._record(now, "skip", len(text), text)
            self.skips += 1
            self.playout.clear()
        elif text == p.DONE.decode():
            self._record(now, "done", len(text), text)
            self._on_done()
        elif text.startswith((p.BACKGROUND_PREFIX, p.FOREGROUND_PREFIX)):
            self._record(now, "control", len(text), text)
            self.controls.append(text)
        else:
            self._record(now, "text", len(text), text)
            if text == p.PING:
                self._spawn(self.send_text(p.PONG), "pong")
        self._notify()

    def _on_binary(self, data: bytes) -> None:
        now = self._clock()
        if data == p.DONE:
            self._record(now, "done", len(data))
            self._on_done()
        elif data.startswith(p.PLAY_IMMEDIATE):
            pcm = data[len(p.PLAY_IMMEDIATE):]
            self._record(now, "immediate", len(pcm))
            self.immediates += 1
            self._on_audio(now, pcm)
            self.playout.play_immediate(pcm)
        elif data.startswith(p.CAMERA_PREFIX):
            self._record(now, "control", len(data))
            self.controls.append(data)
        else:
            self._record(now, "audio", len(data))
            self._on_audio(now, data)
            self.playout.enqueue(data)
        self._notify()

    def _record(self, now: float, kind: MessageKind, size: int, text: str | None = None) -> None:
        self.messages.append(ReceivedMessage(now, kind, size, text))

    def _on_audio(self, now: float, pcm: bytes) -> None:
        self.audio_messages += 1
        self.received_pcm += pcm
        self.last_audio_at = now

    def _on_done(self) -> None:
        self.done_received = True
        self._request_end(StopCause.DONE, ())

    # -- WebRTC and START ------------------------------------------------------------------------------------------
    async def _negotiate(self, offer: RTCSessionDescription) -> None:
        try:
            renderer = await self._renderers.get(self.params.width, self.params.height)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            self.pc, self.pc_open = pc, True
            self._notify()
            pc.on("connectionstatechange", self._on_connection_state)
            self._audio_track = PlayoutAudioTrack(self.playout, on_frame=self._on_audio_frame)
            self._video_track = FaceVideoTrack(
                self.playout, renderer, self.options.fps, on_frame=self._on_video_frame,
                blink=BlinkSchedule(seed=self.index) if self.options.blink else None)
            await pc.setRemoteDescription(offer)
            pc.addTrack(self._audio_track)
            pc.addTrack(self._video_track)
            # aiortc gathers every candidate in setLocalDescription: the answer carries them
            await pc.setLocalDescription(await pc.createAnswer())
            answer = pc.localDescription
            await self.send_text(json.dumps({"sdp": answer.sdp, "type": answer.type}))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("fake Simli session %d: negotiation failed", self.index)
            self._request_end(StopCause.ERROR, [p.ERROR_PREFIX + f"Negotiation failed: {exc!r}"])
            return
        self.answered_at = self._clock()
        self.answered.set()
        self._notify()
        if self.options.start_after_connected:
            # The client has applied the answer once the connection is up: a reply now can't race its
            # setRemoteDescription (an ERROR / RATE LIMIT there makes it close its peer connection under it).
            await self._media_settled.wait()
            if not self.media_connected.is_set():
                self._request_end(StopCause.ERROR, [p.ERROR_PREFIX + "WebRTC connection failed"],
                                  error=p.ERROR_PREFIX + "WebRTC connection failed")
                return
        if self.options.start_delay > 0:
            await asyncio.sleep(self.options.start_delay)
        reply = self.options.start_reply
        if reply is None:
            return  # never START: the client waits until it gives up
        if reply != p.START:
            self._request_end(StopCause.ERROR, [reply], error=reply)
            return
        if await self.send_text(p.START):
            self.started_at = self._clock()
            self.started.set()
            self._timers = self._spawn(self._run_timers(), "timers")
            self._notify()

    def _on_connection_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        if pc.connectionState == "connected":
            self.media_connected.set()
            self._media_settled.set()
            self._notify()
        elif pc.connectionState in ("failed", "closed"):
            # The client closed its side (stop() closes it before sending DONE): the media is gone, the session
            # ends with the websocket.
            self._media_settled.set()
            self._start_media_close()

    def _on_audio_frame(self, index: int) -> None:
        self.audio_frames_sent += 1

    def _on_video_frame(self, index: int, level: int) -> None:
        self.video_frames_sent += 1
        self.video_levels.append(level)
        self._notify()

    def _on_speak(self) -> None:
        self.speaks += 1
        self._spawn(self.send_text(p.SPEAK), "speak")

    def _on_silent(self) -> None:
        self.silents += 1
        self._spawn(self.send_text(p.SILENT), "silent")

    # -- the caps --------------------------------------------------------------------------------------------------
    async def _run_timers(self) -> None:
        started = self.started_at if self.started_at is not None else self._clock()
        max_deadline = started + self.params.max_session_length
        while True:
            now = self._clock()
            # idle as Simli counts it: not speaking, i.e. no audio received and nothing queued still to play
            speaking_until = now + self.playout.queued_samples / INPUT_RATE if self.playout.queued_samples else 0.0
            idle_deadline = max(started, self.last_audio_at or started, speaking_until) + self.params.max_idle_time
            if now >= max_deadline:
                self._request_end(StopCause.MAX, [p.CLOSING_REASON + StopCause.MAX, p.STOP])
                return
            if now >= idle_deadline:
                self._request_end(StopCause.IDLE, [p.CLOSING_REASON + StopCause.IDLE, p.STOP])
                return
            await asyncio.sleep(min(max_deadline, idle_deadline) - now)

    # -- ending ----------------------------------------------------------------------------------------------------
    def _request_end(self, cause: StopCause, messages: Sequence[str], *, close_code: int | None = WSCloseCode.OK,
                     abort: bool = False, error: str | None = None) -> asyncio.Task[None]:
        """Start ending the session (once: the first cause wins); the end task is awaited by the handler."""
        if self._end_task is None:
            if self.stop_cause is None:
                self.stop_cause = cause
                self.error_message = error
            self._end_task = asyncio.create_task(self._finish(list(messages), close_code, abort),
                                                 name=f"fake-simli-{self.index}-end")
            self._notify()
        return self._end_task

    async def _end_and_wait(self, cause: StopCause, messages: Sequence[str], *, error: str | None = None) -> None:
        self._request_end(cause, messages, error=error)
        await self._wait_end()

    async def _wait_end(self) -> None:
        if self._end_task is not None:
            await asyncio.shield(self._end_task)

    async def _finish(self, messages: list[str], close_code: int | None, abort: bool) -> None:
        current = asyncio.current_task()
        for task in (self._negotiation, self._timers):
            if task is not None and task is not current:
                task.cancel()
        try:
            for text in messages:
                await self.send_text(text)
            ws = self._ws
            if ws is not None and ws.prepared:
                if abort:
                    transport = self._request.transport if self._request is not None else None
                    if transport is not None:
                        transport.abort()
                elif close_code is not None:
                    await ws.close(code=close_code)
        except Exception:
            logger.exception("fake Simli session %d: closing the websocket failed", self.index)
        await self._close_media()

    def _start_media_close(self) -> asyncio.Task[None]:
        if self._pc_close_task is None:
            self._pc_close_task = asyncio.create_task(self._close_pc(), name=f"fake-simli-{self.index}-pc-close")
        return self._pc_close_task

    async def _close_media(self) -> None:
        await asyncio.shield(self._start_media_close())

    async def _close_pc(self) -> None:
        for track in (self._audio_track, self._video_track):
            if track is not None:
                track.stop()
        # The negotiation may still be creating the peer connection: it is not left running.
        negotiation = self._negotiation
        if negotiation is not None and negotiation is not asyncio.current_task() and not negotiation.done() \
                and not self.answered.is_set():
            negotiation.cancel()
            await asyncio.gather(negotiation, return_exceptions=True)
        pc = self.pc
        if pc is not None:
            try:
                await close_peer_connection(pc)
            except Exception:
                logger.exception("fake Simli session %d: closing the peer connection failed", self.index)
        self.pc_open = False
        self._notify()
