"""The room-native shape: the vendor's worker joins the room and publishes the avatar itself; the gateway's relay
participant streams it the agent's speech and turns its playback RPCs into the session's events.

Start: join as the relay, mint the worker's token, make the vendor's start call. Under the room transport the agent
streams to the worker itself (`PipelineParts.agent_sends_audio`, "direct"): the gateway joins as a hidden watcher,
relays nothing, and the vendor's playback RPCs go to the agent; the gateway stays the control plane.

Ready (the first frame): the worker is in the room with its track (`Vendor.wait_track`) and, relayed, answers
`lk.clear_buffer` from the relay with "ok" (the stock receiver answers "reject" to anyone but the participant it
plays: a vendor playing someone else's audio is refused at once instead of standing silent). Then, until the worker
leaves the room: the segment book is kept in step by `VendorPlayback`. If the worker leaves mid-session, relayed, the
session goes on with the agent's voice alone (`VoiceFallback`) and the agent is told (PROVIDER_LOST); direct, the
session ends (PROVIDER_LEFT).

Every exit: the vendor's stop call (where it has one; a start cancelled while the vendor was being asked still gets
its answer, and its stop), the worker removed from the room (for a vendor without a stop call, once it has joined,
waiting up to JOIN_WAIT_S), the relay leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import numpy as np
from livekit import rtc

from providers.base import PcmFormat, ProviderError
from providers.pipeline import MediaPipeline, PipelineParts
from providers.playout import PlayoutStats
from providers.room_native.audio_relay import CLEAR_BUFFER, AudioRelay
from providers.room_native.vendor_http import VendorHttp
from providers.room_native.vendor_playback import VendorPlayback
from providers.room_native.vendors import Listens, StartContext, Vendor
from providers.room_native.voice_fallback import VoiceFallback

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often heard time is credited and late finishes are made up
CLEAR_WAIT_S = 1.0  # how long an interrupt waits for the vendor's own interrupted finish of a playing segment
JOIN_WAIT_S = 5.0  # a vendor session without a stop call whose worker has not joined: how long to wait to remove it
PROBE_TRIES = 10  # the worker may register its handler a moment after publishing: asked again, 0.2 s apart
_KINDS = {"video": rtc.TrackKind.KIND_VIDEO, "audio": rtc.TrackKind.KIND_AUDIO}


class RoomNativePipeline(MediaPipeline):
    """One session with a room-native vendor."""

    def __init__(self, vendor: Vendor, key: str, http: VendorHttp, parts: PipelineParts) -> None:
        self._vendor = vendor
        self._key = key
        self._http = http
        self._parts = parts
        self._identity = parts.spec.room.avatar_identity
        self._playback = VendorPlayback(parts.book, vendor_signals_start=vendor.sends_playback_started)
        self._first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()  # the room changed: the worker joined, published or left
        self._finished = asyncio.Event()  # the vendor sent a playback_finished
        self._room: rtc.Room | None = None
        self._relay: AudioRelay | None = None
        self._vendor_session = ""
        self._starting: asyncio.Future[str] | None = None  # the vendor's start call, while it has not answered
        self._worker_joined = False  # the worker has been in the room (it may have left since)
        self._voice: VoiceFallback | None = None  # the agent's voice alone, once the worker left mid-session
        self._closed = False

    @property
    def input_format(self) -> PcmFormat:
        return PcmFormat(self._vendor.sample_rate, 1)

    @property
    def first_frame(self) -> asyncio.Future[None]:
        return self._first

    @property
    def stats(self) -> PlayoutStats:
        # what the vendor played (its positions, the clock between them), then the voice alone
        voiced = self._voice.stats.samples_played if self._voice is not None else 0
        return PlayoutStats(samples_played=round(self._playback.heard_s * self._vendor.sample_rate) + voiced)

    @property
    def vendor_session(self) -> str:
        """The vendor's id for this session ("" before its start call answered)."""
        return self._vendor_session

    async def start(self) -> None:
        parts, vendor = self._parts, self._vendor
        if parts.connection is None or parts.room_admin is None:
            raise ProviderError.precondition(f"{vendor.name} joins a LiveKit room: this gateway is headless",
                                             "HEADLESS_GATEWAY")
        room = await parts.connection.join()
        self._room = room
        for event in ("participant_connected", "participant_disconnected", "track_published", "track_unpublished"):
            room.on(event, lambda *_: self._changed.set())
        room.on("participant_connected", self._joined)
        spec = parts.spec
        direct = parts.agent_sends_audio
        if not direct:
            self._check_relay_can_be_heard(room, spec.room.agent_identity)
            self._relay = AudioRelay(room, self._identity, vendor.sample_rate,
                                     on_started=self._playback.vendor_started, on_finished=self._vendor_finished)
        context = StartContext(
            session_id=spec.session_id, livekit_url=spec.room.url, room_name=spec.room.room_name,
            avatar_identity=self._identity,
            sender_identity=spec.room.agent_identity if direct else parts.connection.spec.avatar_identity,
            avatar_id=spec.avatar_id or vendor.default_avatar_id, options=dict(spec.options),
            worker_token=parts.room_admin.worker_token(self._identity, can_subscribe=False))
        # shielded: a vendor may create the session even if the gateway stops waiting; aclose then waits for the
        # answer and stops what it names
        self._starting = asyncio.ensure_future(vendor.start(self._http, self._key, context))
        self._vendor_session = await asyncio.shield(self._starting)
        self._starting = None
        log.info("%s session started for %s", vendor.name, spec.session_id)

    def _check_relay_can_be_heard(self, room: rtc.Room, agent: str) -> None:
        """A first-agent vendor would take the agent, already in the room, as often as the relay (the SDK's
        participant map is unordered): refused before the vendor is asked, with the way that works."""
        if self._vendor.listens is Listens.FIRST_AGENT and agent in room.remote_participants:
            raise ProviderError.precondition(
                f"the agent {agent!r} is in the room and the {self._vendor.name} avatar plays the first agent it finds:"
                " start the session with audio_transport AUDIO_TRANSPORT_ROOM, and the agent streams to the avatar "
                "itself", "AGENT_IN_ROOM")

    def _joined(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self._identity:
            self._worker_joined = True

    def _vendor_finished(self, position_s: float, interrupted: bool) -> None:
        if self._playback.vendor_finished(position_s, interrupted):
            self._finished.set()

    async def run(self) -> None:
        room, relay = self._room, self._relay
        if room is None:
            raise RuntimeError("the pipeline has not started")
        await self._until(lambda worker: worker is not None and self._has_track(worker))
        if relay is not None:  # relayed: the worker must play the relay's audio
            await self._check_listening(relay)
        self._first.set_result(None)
        while True:
            self._changed.clear()
            if room.remote_participants.get(self._identity) is None:
                if relay is None:  # the agent streams to the vendor itself: nothing here can take its place
                    raise ProviderError.unavailable(f"the {self._vendor.name} avatar left the room", "PROVIDER_LEFT")
                voice = await self._fall_back_to_voice(room)
                await voice.run()
                return
            self._playback.tick()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._changed.wait()

    async def _fall_back_to_voice(self, room: rtc.Room) -> VoiceFallback:
        """The worker left mid-session: the relay publishes the agent's voice itself from now on."""
        name = self._vendor.name
        log.warning("the %s avatar left the room; the session goes on with the agent's voice alone", name)
        voice = VoiceFallback(room, self._parts.book, self._vendor.sample_rate)
        self._voice = voice
        if self._relay is not None:
            await self._relay.close_segment()
        self._playback.hand_over()
        await voice.start()
        if self._parts.on_notice is not None:
            self._parts.on_notice("PROVIDER_LOST", f"the {name} avatar left the room: the session goes on with the "
                                                   "agent's voice alone (the relay participant's microphone track)")
        return voice

    async def _until(self, ready: Callable[[rtc.RemoteParticipant | None], bool]) -> None:
        assert self._room is not None
        while True:
            self._changed.clear()
            if ready(self._room.remote_participants.get(self._identity)):
                return
            await self._changed.wait()

    async def _until_joined(self, timeout_s: float) -> None:
        """Until the worker is in the room, for at most `timeout_s` (at once if it is, or the relay is not)."""
        if self._room is None or not self._room.isconnected():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._until(lambda worker: worker is not None)

    def _has_track(self, worker: rtc.RemoteParticipant) -> bool:
        kind = _KINDS[self._vendor.wait_track]
        return any(pub.kind == kind for pub in worker.track_publications.values())

    async def _check_listening(self, relay: AudioRelay) -> None:
        """Whether the worker plays the relay's audio: its receiver answers our clear with "ok"."""
        for _ in range(PROBE_TRIES):
            answer = await relay.ask(CLEAR_BUFFER)
            if answer == "ok":
                return
            if answer == "reject":
                raise ProviderError.precondition(
                    f"the {self._vendor.name} avatar plays another participant's audio, not the gateway's (it takes"
                    " the first agent participant in the room)", "VENDOR_LISTENS_ELSEWHERE")
            await asyncio.sleep(0.2)
        log.warning("the %s avatar did not answer %s: its audio source is not known", self._vendor.name, CLEAR_BUFFER)

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        if self._voice is not None:
            await self._voice.push_audio(segment_id, pcm)
            return
        if self._relay is None:
            return
        try:
            await self._relay.write(segment_id, pcm.tobytes())
        except Exception as exc:  # the worker went away under the stream: `run` sees it and falls back
            log.info("streaming to the %s avatar failed: %s", self._vendor.name, type(exc).__name__)
        self._playback.wrote(segment_id, pcm.size / self._vendor.sample_rate)

    async def end_segment(self, segment_id: int) -> None:
        if self._voice is not None:
            await self._voice.end_segment(segment_id)
            return
        if self._relay is not None:
            await self._relay.close_segment()
        self._playback.closed(segment_id)

    async def interrupt(self) -> None:
        if self._voice is not None:
            await self._voice.interrupt()
            return
        playback = self._playback
        playback.begin_clear()
        try:
            if self._relay is not None:
                self._finished.clear()
                playing = playback.head_open
                await self._relay.clear()
                if playing and playback.head_open:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CLEAR_WAIT_S):
                            await self._finished.wait()
        finally:
            playback.end_clear()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        parts, vendor = self._parts, self._vendor
        try:
            voice, self._voice = self._voice, None
            if voice is not None:
                await voice.aclose()
            relay, self._relay = self._relay, None
            if relay is not None:
                relay.aclose()
                await relay.close_segment()
            starting, self._starting = self._starting, None
            if starting is not None:  # the start was cancelled while the vendor was asked: its answer is awaited
                try:
                    self._vendor_session = await starting
                except Exception as exc:
                    log.info("%s session start did not complete: %s", vendor.name, type(exc).__name__)
            stop = vendor.stop(self._key, self._vendor_session) if self._vendor_session else None
            if stop is not None:
                try:
                    await self._http.call(stop)
                except ProviderError as exc:
                    log.warning("%s did not stop session %s: %s", vendor.name, self._vendor_session, exc.reason)
            elif self._vendor_session and not self._worker_joined:
                await self._until_joined(JOIN_WAIT_S)  # nothing else ends it: a worker joining late is removed too
            if parts.room_admin is not None:
                await parts.room_admin.remove_participant(self._identity)
        finally:
            if parts.connection is not None:
                await parts.connection.leave()
