"""Helpers for the end-to-end tests: where LiveKit is, a per-test harness (gateway + client + viewers + RoomService),
a viewer whose receptions can be awaited, and the speech clip.

The same tests run against a real LiveKit server (LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET all set) or
against the loopback development server inside the network namespace made by ``scripts/netns-run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import uuid
import warnings
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
from livekit import api
from livekit.protocol import models

from agent_client import AvatarGatewayClient, PlaybackEvent, Session
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from loopback import LoopbackServer, not_in_namespace_reason
from providers.registry import ProviderRegistry, build_registry
from viewer.participant import Viewer
from viewer.sync import envelope_level

# The loopback test secret is deliberately short; PyJWT warns about that on every token.
warnings.filterwarnings("ignore", message="The HMAC key is .* bytes long")

LOOPBACK_KEY = "devkey"
LOOPBACK_SECRET = "e2e-loopback-secret-0123456789abcdef"
ENV_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
TIMEOUT = 20.0  # safety net for any single wait; never a synchronisation mechanism
# Video size for the tests that do not test the size itself. Everything but the CLI gateway shares one process
# and one event loop (loopback SFU decoding and re-encoding VP8, the gateway, the viewer): at the default 640x480,
# on a shared 2-CPU machine, loop stalls of 0.1-0.7 s were measured in about half the runs, long enough to empty
# the gateway's 80 ms audio lead and put gaps in the avatar's audio; at 320x240 they are rare (see LoopStalls).
LIGHT_VIDEO: dict[str, object] = {"width": 320, "height": 240}
REAL_SERVER_POLL_S = 0.2  # RoomService polling interval, real servers only (see Harness.listed_until)
PROVIDER = "mock"
AGENT = "agent-e2e"
SPEECH_WAV = Path(__file__).resolve().parents[2] / "examples" / "assets" / "speech.wav"
SPEECH_RATE = 16000
LEVEL_CHUNK_S = 0.010  # the viewer reports one audio level per 10 ms chunk


# ---------------------------------------------------------------------------------------------------- the target
class LiveKitTarget(NamedTuple):
    """Where the tests' LiveKit server is. `loopback` is None when it is a real server (LIVEKIT_URL ...)."""

    url: str
    api_key: str
    api_secret: str
    loopback: LoopbackServer | None


@dataclasses.dataclass(frozen=True)
class TargetChoice:
    """Which server the e2e tests use, and why (for the report header and skip reasons)."""

    real: bool
    message: str
    skip_reason: str | None


def choose_target(env: Mapping[str, str] | None = None) -> TargetChoice:
    """A real server when all of LIVEKIT_URL/_API_KEY/_API_SECRET are set; the loopback server otherwise."""
    env = os.environ if env is None else env
    missing = [name for name in ENV_VARS if not env.get(name)]
    if not missing:
        return TargetChoice(True, f"e2e: using the real LiveKit server at {env['LIVEKIT_URL']} (LIVEKIT_URL, "
                                  "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are set)", None)
    why = ("LIVEKIT_URL not set" if "LIVEKIT_URL" in missing
           else f"LIVEKIT_URL is set but {' and '.join(missing)} not")
    message = f"e2e: {why}: using the loopback development server inside the network namespace"
    reason = not_in_namespace_reason()
    if reason is None:
        return TargetChoice(False, message, None)
    return TargetChoice(False, message + " (not available here: tests skip)",
                        f"e2e: {why} (no real LiveKit server), so the loopback development server is used, and it "
                        f"{reason}; or set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET for a real server")


# ---------------------------------------------------------------------------------------------------- the viewer
_T = TypeVar("_T")


class _Feed(list[_T]):
    """A list that calls `changed` after every append (the viewer only ever appends)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._changed = changed

    def append(self, item: _T) -> None:
        super().append(item)
        self._changed()


class ObservedViewer(Viewer):
    """The project's Viewer, whose receptions (audio chunks, video frames, the avatar leaving) can be awaited."""

    def __init__(self, url: str, token: str, *, avatar_identity: str) -> None:
        super().__init__(url, token, avatar_identity=avatar_identity)
        self._change = asyncio.Event()
        self.rx.video = _Feed(self._changed)
        self.rx.audio = _Feed(self._changed)
        self.disconnected_identities: list[str] = []
        self.connected_identities: list[str] = []
        self.room.on("participant_connected", lambda p: self._record(self.connected_identities, p.identity))
        self.room.on("participant_disconnected", lambda p: self._record(self.disconnected_identities, p.identity))

    def _record(self, into: list[str], identity: str) -> None:
        into.append(identity)
        self._changed()

    def _changed(self) -> None:
        self._change.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        """Until `predicate()` holds; re-checked whenever a frame, an audio chunk or a participant event arrives."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._change.clear()
                await self._change.wait()

    async def wait_audio_chunks(self, count: int, after: int = 0) -> None:
        """Until at least `count` audio chunks arrived after index `after`."""
        await self.wait_until(lambda: len(self.rx.audio) >= after + count)

    async def wait_video_frames(self, count: int, after: int = 0) -> None:
        """Until at least `count` video frames arrived after index `after`."""
        await self.wait_until(lambda: len(self.rx.video) >= after + count)


# ---------------------------------------------------------------------------------------------------- the harness
def unique_room(label: str) -> str:
    """A room name no other test uses."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40]
    return f"e2e-{slug}-{uuid.uuid4().hex[:8]}"


def new_session_id() -> str:
    """A session id the gateway accepts (lowercase, starts with a letter)."""
    return f"e2e-{uuid.uuid4().hex[:16]}"


def avatar_identity_for(session_id: str, provider: str = PROVIDER) -> str:
    """The avatar participant's identity the gateway promises for a session."""
    return f"avatar-{provider}-{session_id}"


class Harness:
    """One test's world: its own room, gateways on 127.0.0.1, an agent client, viewers, and RoomService access.

    Leaving it closes the viewers, stops the gateways (each must leave no active session) and checks that
    nothing of the test is left in its room.
    """

    def __init__(self, target: LiveKitTarget, room: str) -> None:
        self.target = target
        self.room = room
        self.gateways: list[GatewayServer] = []
        self.clients: list[AvatarGatewayClient] = []
        self.viewers: list[ObservedViewer] = []
        self.lkapi = api.LiveKitAPI(target.url, target.api_key, target.api_secret)

    @property
    def lk(self) -> LoopbackServer | None:
        return self.target.loopback

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, target: LiveKitTarget, label: str) -> AsyncIterator[Harness]:
        harness = cls(target, unique_room(label))
        try:
            yield harness
        finally:
            await harness.aclose()

    async def aclose(self) -> None:
        for viewer in self.viewers:
            await viewer.aclose()
        try:
            for gateway in self.gateways:
                await gateway.stop(0.0)
                assert not gateway.manager.active(), "sessions still active after the gateway stopped"
            for client in self.clients:
                await client.close()
            # nothing of this test is left on the server
            if self.lk is not None:
                await self.lk.wait_for(lambda s: self.room not in s.rooms, TIMEOUT)
            else:
                left = await self.listed_until(lambda listed: not listed)
                assert left == {}, f"participants left in the room after the test: {sorted(left)}"
        finally:
            await self.lkapi.aclose()

    # -- gateway and client
    async def start_gateway(self, registry: ProviderRegistry | None = None, **overrides: object) -> GatewayServer:
        base = GatewayConfig(listen="127.0.0.1:0", livekit_url=self.target.url, livekit_api_key=self.target.api_key,
                             livekit_api_secret=self.target.api_secret, shutdown_grace_s=0.0)
        server = GatewayServer(dataclasses.replace(base, **overrides),  # type: ignore[arg-type]
                               registry or build_registry({}))
        await server.start()
        self.gateways.append(server)
        return server

    def client(self, port: int) -> AvatarGatewayClient:
        client = AvatarGatewayClient(f"127.0.0.1:{port}", timeout=TIMEOUT)
        self.clients.append(client)
        return client

    async def gateway_client(self, registry: ProviderRegistry | None = None, **overrides: object
                             ) -> tuple[GatewayServer, AvatarGatewayClient]:
        gateway = await self.start_gateway(registry, **overrides)
        return gateway, self.client(gateway.port)

    async def start_session(self, client: AvatarGatewayClient, session_id: str, **kwargs: object) -> Session:
        """A session in this test's room (`provider=` picks the provider; the mock by default)."""
        provider = str(kwargs.pop("provider", PROVIDER))
        params: dict[str, object] = {"room_name": self.room, "agent_identity": AGENT, "session_id": session_id}
        params.update(kwargs)
        return await client.start_session(provider, **params)  # type: ignore[arg-type]

    # -- viewers
    def token(self, identity: str) -> str:
        grants = api.VideoGrants(room_join=True, room=self.room)
        return (api.AccessToken(self.target.api_key, self.target.api_secret)
                .with_identity(identity).with_grants(grants).to_jwt())

    async def viewer(self, avatar_identity: str, identity: str = "viewer") -> ObservedViewer:
        """A joined viewer of `avatar_identity` (which may join the room later)."""
        viewer = ObservedViewer(self.target.url, self.token(identity), avatar_identity=avatar_identity)
        self.viewers.append(viewer)
        async with asyncio.timeout(TIMEOUT):
            await viewer.join()
        return viewer

    async def watched_session(self, client: AvatarGatewayClient, **kwargs: object
                              ) -> tuple[Session, ObservedViewer, str]:
        """A light mock session that a viewer, in the room before the avatar, receives: (session, viewer, avatar)."""
        session_id = new_session_id()
        avatar = avatar_identity_for(session_id)
        viewer = await self.viewer(avatar)
        session = await self.start_session(client, session_id, **{**LIGHT_VIDEO, **kwargs})
        await self.watch(viewer)
        return session, viewer, avatar

    async def watch(self, viewer: ObservedViewer) -> None:
        """Until the viewer is subscribed to both avatar tracks and has a first video frame."""
        async with asyncio.timeout(TIMEOUT):
            await viewer.wait_tracks()
            await viewer.first_frame.wait()

    # -- the server's view
    async def participants(self) -> dict[str, models.ParticipantInfo]:
        """The room's participants by identity, from RoomService ListParticipants ({} if the room is gone)."""
        try:
            resp = await self.lkapi.room.list_participants(api.ListParticipantsRequest(room=self.room))
        except api.TwirpError as err:
            if err.code == "not_found":
                return {}
            raise
        return {p.identity: p for p in resp.participants}

    async def listed_until(self, predicate: Callable[[dict[str, models.ParticipantInfo]], bool]
                           ) -> dict[str, models.ParticipantInfo]:
        """ListParticipants once (loopback: its state is already settled, the caller waited on `lk.wait_for`);
        against a real server, again until `predicate` holds or TIMEOUT passes: RoomService has no way to watch a
        room and a server (or a cluster of them) may apply a departure a moment after the leaver's peers hear of
        it. Returns the last listing either way; the caller asserts on it."""
        listed = await self.participants()
        if self.lk is not None:
            return listed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not predicate(listed) and loop.time() < deadline:
            await asyncio.sleep(REAL_SERVER_POLL_S)
            listed = await self.participants()
        return listed

    async def assert_avatar_left(self, viewer: ObservedViewer, avatar: str) -> None:
        """The viewer saw the avatar disconnect, the server no longer has it, and RoomService does not list it."""
        async with asyncio.timeout(TIMEOUT):
            await viewer.avatar_left.wait()
        assert avatar in viewer.disconnected_identities
        assert avatar not in viewer.room.remote_participants
        if self.lk is not None:
            await self.lk.wait_for(
                lambda s: self.room not in s.rooms or avatar not in s.rooms[self.room].participants, TIMEOUT)
        listed = await self.listed_until(lambda listed: avatar not in listed)
        assert avatar not in listed, f"RoomService still lists the avatar: {sorted(listed)}"
        from_gateway = [i for i, p in listed.items() if "lk.avatar_provider" in p.attributes]
        assert from_gateway == [], f"participants from the gateway left in the room: {from_gateway}"

    async def assert_nothing_left_after(self, viewer: ObservedViewer) -> None:
        """The viewer leaves; then the room is empty (loopback: the whole server is idle)."""
        await viewer.aclose()
        if self.lk is not None:
            state = await self.lk.wait_for(lambda s: s.idle, TIMEOUT)
            assert state.rooms == {} and state.peer_connections == 0 and state.websockets == 0
        left = await self.listed_until(lambda listed: not listed)
        assert left == {}, f"participants left in the room: {sorted(left)}"


# ---------------------------------------------------------------------------------------------------- audio
def speech_clip(seconds: float) -> np.ndarray:
    """The first `seconds` of examples/assets/speech.wav (16 kHz mono int16)."""
    with wave.open(str(SPEECH_WAV)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SPEECH_RATE, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    n = round(seconds * SPEECH_RATE)
    assert pcm.size >= n, "the speech clip is shorter than asked"
    return pcm[:n]


def envelope(pcm: np.ndarray, rate: int = SPEECH_RATE) -> np.ndarray:
    """Level (viewer.sync.envelope_level: the viewer's scale) of every 10 ms of `pcm`."""
    step = round(rate * LEVEL_CHUNK_S)
    return np.array([envelope_level(pcm[i : i + step]) for i in range(0, pcm.size - step + 1, step)])


def best_lag_correlation(sent: np.ndarray, received: np.ndarray) -> tuple[int, float]:
    """(lag in chunks, Pearson correlation) of `sent` against the window of `received` that matches it best."""
    n = sent.size
    if received.size < n:
        raise ValueError("the received series is shorter than the sent one")
    windows = np.lib.stride_tricks.sliding_window_view(received, n)
    s = (sent - sent.mean()) / (sent.std() or 1.0)
    centred = windows - windows.mean(axis=1, keepdims=True)
    std = centred.std(axis=1)
    std[std == 0] = np.inf
    corr = (centred @ s) / (n * std)
    lag = int(np.argmax(corr))
    return lag, float(corr[lag])


def aligned_correlation(sent: np.ndarray, received: np.ndarray, *, block: int = 100, search: int = 25
                        ) -> tuple[float, int, float, list[int]]:
    """How well `received` reproduces `sent` (two level series, one value per 10 ms).

    Returns (correlation after aligning each `block`, global lag, global correlation, per-block lags). The global
    lag is the best single cross-correlation lag; then each block of `sent` is matched within +-`search` chunks of
    it and the matched windows are correlated with `sent` as a whole. Block alignment absorbs the receiver's jitter
    buffer, which stretches and squeezes time by tens of milliseconds (WebRTC's NetEq), while still demanding
    that the whole envelope be reproduced.
    """
    lag, global_corr = best_lag_correlation(sent, received)
    aligned: list[np.ndarray] = []
    lags: list[int] = []
    for b in range(0, sent.size, block):
        part = sent[b : b + block]
        at = lag + b
        lo, hi = max(0, at - search), min(received.size, at + part.size + search)
        if part.std() > 0 and hi - lo >= part.size:
            local, _ = best_lag_correlation(part, received[lo:hi])
            at = lo + local
        aligned.append(received[at : at + part.size])
        lags.append(at - lag - b)
    matched = np.concatenate(aligned)
    return float(np.corrcoef(sent[: matched.size], matched)[0, 1]), lag, global_corr, lags


def chunked(pcm: np.ndarray, ms: int = 20, rate: int = SPEECH_RATE) -> Iterable[bytes]:
    """`pcm` as `ms`-millisecond PCM16 chunks."""
    step = rate * ms // 1000
    for i in range(0, pcm.size, step):
        yield pcm[i : i + step].tobytes()


class LoopStalls:
    """Measures how late this event loop runs its callbacks (the worst stall), while in use as a context manager.

    Not synchronisation: a probe. Everything but the CLI gateway shares this loop, so a stall longer than the
    gateway's audio lead (GatewayConfig.lead_ms) empties its audio queue and the viewer hears gaps whatever the
    gateway does; media measurements taken across such a stall describe the machine, not the gateway.
    """

    PERIOD_S = 0.01

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopStalls:
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="e2e-loop-stalls")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PERIOD_S)
            self.worst = max(self.worst, loop.time() - before - self.PERIOD_S)


class EventLog:
    """Collects an AudioStream's events in a background task so tests can wait for a specific one."""

    def __init__(self, events: AsyncIterator[PlaybackEvent]) -> None:
        self.events: list[PlaybackEvent] = []
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        self._change = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(events), name="e2e-events")

    async def _run(self, events: AsyncIterator[PlaybackEvent]) -> None:
        try:
            async for event in events:
                self.events.append(event)
                self._change.set()
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()
            self._change.set()

    async def wait_for(self, predicate: Callable[[PlaybackEvent], bool],
                       timeout: float = TIMEOUT) -> PlaybackEvent:  # noqa: ASYNC109
        """The first event satisfying `predicate` (waits for it); fails if the stream ends without one."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.done.is_set():
                    raise AssertionError(f"the stream ended without the expected event: {self.events} "
                                         f"(error: {self.error!r})")
                self._change.clear()
                await self._change.wait()

    async def finish(self, timeout: float = TIMEOUT) -> list[PlaybackEvent]:  # noqa: ASYNC109
        """Until the stream has ended; every event."""
        async with asyncio.timeout(timeout):
            await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.events

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
