"""The error model, case by case (README, "Errors"): every bad input gets its gRPC code AND its google.rpc
details (ErrorInfo with domain "avatar.v1" and a reason, plus BadRequest / ResourceInfo / RetryInfo / QuotaFailure /
PreconditionFailure as fits), unexpected failures become INTERNAL "Internal error." with nothing leaked, and after
every bad StreamAudio input the gateway keeps serving: another session streaming at the same time plays out
normally, the session the bad call named stays ACTIVE and takes a new stream, and every segment the bad stream had
opened gets exactly one playback_finished (interrupted) before the error status.

Every wait is on events (stream events, call completion); asyncio.timeout is only a safety net against hangs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import pytest
from avatar.v1 import audio_stream_pb2 as spb
from avatar.v1 import avatar_provider_pb2 as pb
from avatar.v1 import avatar_provider_pb2_grpc as pb_grpc
from avatar.v1 import session_pb2
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2 as ed

from agent_client import (
    AudioStream,
    AvatarGatewayClient,
    GatewayError,
    PlaybackEvent,
    PlaybackFinished,
    PlaybackStarted,
    SessionEnded,
    StreamWarning,
)
from agent_client.errors import from_rpc_error
from gateway.config import parse_api_keys
from gateway.server import GatewayServer
from gateway.service import ANONYMOUS
from gateway.session import State
from gateway.stream_audio_call import StreamAudioCall
from providers.base import AvatarFrame, ProviderError, ProviderSession, SessionSpec
from providers.mock.provider import MOCK_INFO, MockProvider, MockSession
from providers.registry import ProviderRegistry
from tests.cli_process import clean_env, gateway_executable
from tests.conftest import chunks, speech

WAIT = 20.0  # safety net only: a test that needs it has hung
DOMAIN = "avatar.v1"
SECRET = "sk-live-7f3a9c-do-not-leak"
Code = grpc.StatusCode
MakeGateway = Callable[..., Any]
Req = spb.StreamAudioRequest

ACTIVE = session_pb2.SESSION_STATE_ACTIVE
ENDED = session_pb2.SESSION_STATE_ENDED
FAILED = session_pb2.SESSION_STATE_FAILED


# ---------------------------------------------------------------------------------------------------------------
# Expected errors
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """An expected status: code, ErrorInfo reason (domain avatar.v1) and exactly the details that fit.

    String values may name sessions as "{a}", "{b}", "{target}"; `check` fills them in.
    """

    code: grpc.StatusCode
    reason: str
    bad_field: str | None = None  # BadRequest: the one field violation
    resource: str | None = None  # ResourceInfo: resource_name
    quota: str | None = None  # QuotaFailure: the violation's subject
    precondition: tuple[str, str] | None = None  # PreconditionFailure: (type, subject)
    retry: bool = False  # RetryInfo with a positive delay
    metadata: Mapping[str, str] = field(default_factory=dict)  # a subset of ErrorInfo.metadata

    def check(self, err: GatewayError, **names: str) -> None:
        def fill(text: str) -> str:
            return text.format(**names)

        assert err.code is self.code, f"expected {self.code.name}, got {err}"
        assert (err.reason, err.domain) == (self.reason, DOMAIN), str(err)
        assert err.details and isinstance(err.details[0], ed.ErrorInfo), err.details
        assert SECRET not in err.message
        for key, value in self.metadata.items():
            assert err.metadata.get(key) == fill(value), err.metadata
        kinds: set[type[Message]] = set()
        if self.bad_field is not None:
            kinds.add(ed.BadRequest)
            bad = err.detail(ed.BadRequest)
            assert isinstance(bad, ed.BadRequest)
            assert [(v.field, v.reason) for v in bad.field_violations] == [(fill(self.bad_field), self.reason)]
            assert bad.field_violations[0].description
            assert err.metadata.get("field") == fill(self.bad_field)
        if self.resource is not None:
            kinds.add(ed.ResourceInfo)
            info = err.detail(ed.ResourceInfo)
            assert isinstance(info, ed.ResourceInfo)
            assert (info.resource_type, info.resource_name) == ("avatar.v1/Session", fill(self.resource))
        if self.quota is not None:
            kinds.add(ed.QuotaFailure)
            quota = err.detail(ed.QuotaFailure)
            assert isinstance(quota, ed.QuotaFailure)
            assert [v.subject for v in quota.violations] == [fill(self.quota)]
            assert quota.violations[0].description
        if self.precondition is not None:
            kinds.add(ed.PreconditionFailure)
            pre = err.detail(ed.PreconditionFailure)
            assert isinstance(pre, ed.PreconditionFailure)
            assert [(v.type, v.subject) for v in pre.violations] == [tuple(map(fill, self.precondition))]
        if self.retry:
            kinds.add(ed.RetryInfo)
            assert err.retry_after is not None and err.retry_after > 0
        assert {type(d) for d in err.details[1:]} == kinds, err.details
        assert len(err.details) == 1 + len(kinds), err.details


def invalid(field_name: str, reason: str) -> Expect:
    """INVALID_ARGUMENT with a BadRequest naming `field_name`."""
    return Expect(Code.INVALID_ARGUMENT, reason, bad_field=field_name)


def not_found(name: str) -> Expect:
    """NOT_FOUND with a ResourceInfo naming the session."""
    return Expect(Code.NOT_FOUND, "SESSION_NOT_FOUND", resource=name, metadata={"session": name})


UNAUTHENTICATED = Expect(Code.UNAUTHENTICATED, "UNAUTHENTICATED")
INTERNAL = Expect(Code.INTERNAL, "INTERNAL")


# ---------------------------------------------------------------------------------------------------------------
# Connections and calls
# ---------------------------------------------------------------------------------------------------------------
class Conn:
    """A typed client plus raw stubs (for requests the typed client cannot express) on one gateway."""

    def __init__(self, server: GatewayServer, api_key: str | None = None) -> None:
        target = f"127.0.0.1:{server.port}"
        self.server = server
        self.client = AvatarGatewayClient(target, api_key=api_key, timeout=WAIT)
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 8 << 20)])
        self.stub: Any = pb_grpc.AvatarProviderStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    async def __aenter__(self) -> Conn:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.client.close()
        await self.channel.close()

    async def call(self, method: str, request: Message) -> Any:
        """A unary call; a failure raises the decoded GatewayError."""
        try:
            return await getattr(self.stub, method)(request, timeout=WAIT, metadata=self.metadata)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def start(self, session_id: str = "", **fields: Any) -> str:
        """Start a session (mock provider unless told otherwise); returns its name."""
        resp = await self.call("StartSession", start_request(session_id=session_id, **fields))
        assert resp.session.state == ACTIVE
        return str(resp.session.name)

    async def state(self, name: str) -> int:
        return int((await self.client.get_session(name)).state)

    async def count(self, show_ended: bool = True) -> int:
        return len([s async for s in self.client.list_sessions(show_ended=show_ended)])


ROOM = session_pb2.RoomTarget(room_name="test-room", agent_identity="agent-1")


def start_request(**fields: Any) -> pb.StartSessionRequest:
    """A valid StartSession request for the mock provider, with `fields` replaced."""
    return pb.StartSessionRequest(**{"provider": "mock", "room": ROOM, **fields})


def seconds(s: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=s, nanos=nanos)


async def failure(aw: Any) -> GatewayError:
    """The GatewayError an awaitable fails with."""
    with pytest.raises(GatewayError) as info:
        async with asyncio.timeout(WAIT):
            await aw
    return info.value


async def first_watch_item(client: AvatarGatewayClient, name: str) -> session_pb2.Session:
    watch = client.watch_session(name)
    assert isinstance(watch, AsyncGenerator)
    try:
        return await anext(watch)
    finally:
        await watch.aclose()


# ---------------------------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------------------------
def cfg(session: str, rate: int = 16000, channels: int = 1,
        encoding: int = session_pb2.AUDIO_ENCODING_PCM16LE) -> Req:
    fmt = session_pb2.AudioFormat(sample_rate_hz=rate, channels=channels, encoding=encoding)  # type: ignore[arg-type]
    return Req(config=spb.StreamAudioConfig(session=session, format=fmt))


def audio(pcm: bytes) -> Req:
    return Req(audio=spb.AudioChunk(pcm=pcm))


SEGMENT_END = Req(segment_end=spb.SegmentEnd())


def pcm(s: float, channels: int = 1) -> bytes:
    return speech(s, channels=channels).tobytes()


def speech_chunks(s: float, channels: int = 1, seed: int = 1) -> list[Req]:
    return [audio(c) for c in chunks(speech(s, seed=seed, channels=channels), channels=channels)]


def two_segments(name: str, channels: int = 1) -> list[Req]:
    """config, a closed segment of 1 s (far from played out when the next messages arrive) and an open one."""
    return [cfg(name, channels=channels), *speech_chunks(1.0, channels), SEGMENT_END,
            *speech_chunks(0.1, channels, seed=2)]


async def raw_stream(conn: Conn, requests: Sequence[Req]) -> tuple[list[spb.StreamAudioResponse], GatewayError]:
    """Send `requests` (then half-close) on a raw StreamAudio call while reading every response; the call must end
    with an error status, which is returned decoded with the responses that came before it.

    The bad input must be the LAST request: grpc.aio replaces the server's status by INTERNAL "Internal error from
    Core" when a client write fails because the server already ended the call (grpc/grpc#36066), so a test that
    kept writing after the bad input would see that instead of the gateway's status, at random."""
    call = conn.stub.StreamAudio(timeout=WAIT, metadata=conn.metadata)

    async def write() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):  # the call already ended
            for req in requests:
                await call.write(req)
            await call.done_writing()

    writer = asyncio.create_task(write())
    responses: list[spb.StreamAudioResponse] = []
    try:
        async with asyncio.timeout(WAIT):
            async for resp in call:
                responses.append(resp)
            await writer
    except grpc.aio.AioRpcError as err:
        error = from_rpc_error(err)
    else:
        pytest.fail(f"StreamAudio ended with OK after {[r.WhichOneof('response') for r in responses]}")
    finally:
        call.cancel()
        async with asyncio.timeout(WAIT):
            await writer
    return responses, error


def assert_only_error(responses: Sequence[spb.StreamAudioResponse], err: GatewayError) -> None:
    """A stream refused before it was ready: its one response is its status, in band."""
    assert [r.WhichOneof("response") for r in responses] == ["error"], responses
    assert (responses[0].error.code, responses[0].error.message) == (err.code.value[0], err.message)


def check_bad_stream_responses(responses: Sequence[spb.StreamAudioResponse], segments: int) -> None:
    """Before a stream-fatal error: ready (if the config was accepted) and exactly one interrupted
    playback_finished for each of the `segments` segments it opened; never a session_ended."""
    kinds = [r.WhichOneof("response") for r in responses]
    if segments == 0:
        assert "playback_finished" not in kinds
        return
    assert kinds[0] == "ready"
    assert "session_ended" not in kinds
    finished = [r.playback_finished for r in responses if r.WhichOneof("response") == "playback_finished"]
    assert sorted(f.segment_id for f in finished) == list(range(1, segments + 1)), kinds
    assert all(f.interrupted for f in finished), finished


def without_warnings(events: Sequence[PlaybackEvent]) -> list[PlaybackEvent]:
    return [e for e in events if not isinstance(e, StreamWarning)]


async def play(client: AvatarGatewayClient, name: str, s: float = 0.1) -> list[PlaybackEvent]:
    """One whole segment on a new stream; returns the events (warnings dropped)."""
    events: list[PlaybackEvent] = []
    async with asyncio.timeout(WAIT):
        async with client.stream_audio(name, sample_rate=16000, timeout=WAIT) as stream:
            for c in chunks(speech(s)):
                await stream.send(c)
            await stream.end_segment()
        events.extend([ev async for ev in stream])
    return without_warnings(events)


async def assert_serves(client: AvatarGatewayClient, name: str) -> None:
    """The session is ACTIVE and a new stream on it plays a segment normally."""
    assert (await client.get_session(name)).state == ACTIVE
    events = await play(client, name, 0.1)
    assert len(events) == 2, events
    assert events[0] == PlaybackStarted(1)
    assert isinstance(events[1], PlaybackFinished)
    assert (events[1].segment_id, events[1].interrupted) == (1, False)
    assert events[1].position == pytest.approx(0.1, abs=0.005)


@contextlib.asynccontextmanager
async def playing(client: AvatarGatewayClient, name: str) -> AsyncIterator[AudioStream]:
    """A stream on `name` whose one segment has started playing on entry and stays open across the block; on exit
    the rest of the segment is sent and it must play out normally (started, then finished uninterrupted at the
    position of all the audio sent), and the stream must end OK."""
    stream = client.stream_audio(name, sample_rate=16000, timeout=WAIT)
    events: list[PlaybackEvent] = []
    started = asyncio.Event()

    async def read() -> None:
        async for ev in stream:
            events.append(ev)
            if isinstance(ev, PlaybackStarted):
                started.set()

    async with asyncio.timeout(WAIT):
        await stream.open()
    reader = asyncio.create_task(read(), name="test-reader")
    try:
        for c in chunks(speech(0.3)):
            await stream.send(c)
        async with asyncio.timeout(WAIT):
            await started.wait()
        yield stream
        for c in chunks(speech(0.3, seed=2)):
            await stream.send(c)
        await stream.end_segment()
        await stream.close()
        async with asyncio.timeout(WAIT):
            await reader
    finally:
        if not reader.done():
            stream.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await reader
    playback = without_warnings(events)
    assert len(playback) == 2, events
    assert playback[0] == PlaybackStarted(1)
    assert isinstance(playback[1], PlaybackFinished)
    assert (playback[1].segment_id, playback[1].interrupted) == (1, False)
    assert playback[1].position == pytest.approx(0.6, abs=0.005)


# ---------------------------------------------------------------------------------------------------------------
# Test-only providers
# ---------------------------------------------------------------------------------------------------------------
class ExplodingSession(MockSession):
    """A mock avatar whose second audio chunk hits an unexpected exception."""

    def __init__(self, spec: SessionSpec) -> None:
        super().__init__(spec.video)
        self.pushes = 0

    async def push_audio(self, segment_id: int, pcm: np.ndarray) -> None:
        self.pushes += 1
        if self.pushes == 2:
            raise RuntimeError(f"provider socket closed, token={SECRET}")
        await super().push_audio(segment_id, pcm)


class TestProvider(MockProvider):
    """The mock avatar under another name; its starts can fail (one exception per start, in order), wait on a gate,
    and its sessions can explode on audio."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, *, failures: Sequence[BaseException] = (), gate: asyncio.Event | None = None,
                 enabled: bool = True, exploding: bool = False) -> None:
        self._info = dataclasses.replace(MOCK_INFO, name=name, enabled=enabled,
                                         disabled_reason="" if enabled else "switched off for this test")
        self.failures = list(failures)
        self.gate = gate
        self.exploding = exploding
        self.starts = 0
        self.cancelled = 0  # starts cancelled while they waited on the gate
        self.entered = asyncio.Event()

    @property
    def info(self) -> Any:
        return self._info

    async def start(self, spec: SessionSpec) -> ProviderSession:
        self.starts += 1
        self.entered.set()
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.failures:
            raise self.failures.pop(0)
        if self.exploding:
            return ExplodingSession(spec)
        return await super().start(spec)


async def gateway_with(make_gateway: MakeGateway, *providers: TestProvider, **overrides: object) -> GatewayServer:
    """A gateway knowing the mock provider and `providers`."""
    registry = ProviderRegistry([MockProvider(), *providers])
    server = await make_gateway(registry=registry, **overrides)
    assert isinstance(server, GatewayServer)
    return server


# ---------------------------------------------------------------------------------------------------------------
# UNAUTHENTICATED and PERMISSION_DENIED
# ---------------------------------------------------------------------------------------------------------------
API_KEYS = "alice:k1,bob:k2:mock"

METHODS: list[tuple[str, Callable[[str], Message]]] = [
    ("ListProviders", lambda name: pb.ListProvidersRequest()),
    ("StartSession", lambda name: start_request()),
    ("GetSession", lambda name: pb.GetSessionRequest(name=name)),
    ("ListSessions", lambda name: pb.ListSessionsRequest()),
    ("EndSession", lambda name: pb.EndSessionRequest(name=name)),
]


@pytest.mark.parametrize("api_key", [None, "wrong", ""], ids=["no-key", "wrong-key", "empty-bearer"])
async def test_unauthenticated(make_gateway: MakeGateway, api_key: str | None) -> None:
    server = await make_gateway(api_keys=parse_api_keys(API_KEYS))
    async with Conn(server, api_key="k1") as alice, Conn(server, api_key=api_key) as stranger:
        if api_key == "":
            stranger.metadata = (("authorization", "Bearer "),)
        a = await alice.start("a-session")
        b = await alice.start("b-session")
        for method, request in METHODS:
            UNAUTHENTICATED.check(await failure(stranger.call(method, request(b))))
        UNAUTHENTICATED.check(await failure(first_watch_item(stranger.client, b)))
        async with playing(alice.client, a):
            responses, err = await raw_stream(stranger, [])  # refused on its metadata: nothing to write
        UNAUTHENTICATED.check(err)
        assert_only_error(responses, err)
        assert await alice.count() == 2  # nothing started, nothing ended
        await assert_serves(alice.client, b)


async def test_authorization_header_needs_bearer_scheme(make_gateway: MakeGateway) -> None:
    server = await make_gateway(api_keys=parse_api_keys(API_KEYS))
    async with Conn(server) as conn:
        conn.metadata = (("authorization", "k1"),)
        UNAUTHENTICATED.check(await failure(conn.call("ListProviders", pb.ListProvidersRequest())))
        conn.metadata = (("authorization", "Bearer k1"),)
        listed = await conn.call("ListProviders", pb.ListProvidersRequest())
        assert [p.name for p in listed.providers][:2] == ["mock", "simli"]


@pytest.mark.parametrize("provider", ["other", "nope", ""])
async def test_caller_limited_to_a_provider(make_gateway: MakeGateway, provider: str) -> None:
    """bob may use only `mock`: any other provider is PERMISSION_DENIED, even one that does not exist (permission
    is checked before existence)."""
    off = TestProvider("other")
    server = await gateway_with(make_gateway, off, api_keys=parse_api_keys(API_KEYS))
    async with Conn(server, api_key="k2") as bob:
        err = await failure(bob.call("StartSession", start_request(provider=provider)))
        Expect(Code.PERMISSION_DENIED, "PERMISSION_DENIED", metadata={"provider": provider}).check(err)
        assert off.starts == 0
        assert await bob.count() == 0
        await bob.start("allowed")  # mock is fine


async def test_caller_cannot_touch_another_callers_session(make_gateway: MakeGateway) -> None:
    server = await make_gateway(api_keys=parse_api_keys(API_KEYS))
    async with Conn(server, api_key="k1") as alice, Conn(server, api_key="k2") as bob:
        a = await alice.start("a-session")
        b = await bob.start("b-session")
        # bob's session is NOT_FOUND for alice, byte for byte as a session that does not exist (AIP-211)
        denied = not_found("{b}")
        missing = await failure(alice.client.get_session("sessions/nope"))
        async with playing(alice.client, a):
            for method, request in METHODS[2:]:
                if method != "ListSessions":
                    denied.check(await failure(alice.call(method, request(b))), b=b)
            denied.check(await failure(first_watch_item(alice.client, b)), b=b)
            responses, err = await raw_stream(alice, [cfg(b)])
            denied.check(err, b=b)
            assert_only_error(responses, err)
            theirs = await failure(alice.client.get_session(b))
            assert theirs.message.replace(b, "sessions/nope") == missing.message
            assert [type(d) for d in theirs.details] == [type(d) for d in missing.details]
        assert [s.name async for s in alice.client.list_sessions(show_ended=True)] == [a]
        await assert_serves(bob.client, b)


# ---------------------------------------------------------------------------------------------------------------
# INVALID_ARGUMENT on StartSession, names, ListSessions
# ---------------------------------------------------------------------------------------------------------------
def room(**fields: str) -> session_pb2.RoomTarget:
    return session_pb2.RoomTarget(**{"room_name": "r", "agent_identity": "a", **fields})


def video(width: int = 0, height: int = 0, fps: int = 0) -> session_pb2.VideoFormat:
    return session_pb2.VideoFormat(width=width, height=height, fps=fps)


START_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown-provider", {"provider": "nope"}, "provider", "UNKNOWN_PROVIDER"),
    ("missing-provider", {"provider": ""}, "provider", "MISSING_FIELD"),
    ("missing-room", {"room": None}, "room.room_name", "MISSING_FIELD"),
    ("missing-room-name", {"room": room(room_name="")}, "room.room_name", "MISSING_FIELD"),
    ("long-room-name", {"room": room(room_name="r" * 257)}, "room.room_name", "INVALID_ROOM"),
    ("missing-agent", {"room": room(agent_identity="")}, "room.agent_identity", "MISSING_FIELD"),
    ("long-agent", {"room": room(agent_identity="a" * 257)}, "room.agent_identity", "INVALID_ROOM"),
    ("foreign-livekit-url", {"room": room(url="wss://elsewhere.example")}, "room.url", "UNKNOWN_LIVEKIT_SERVER"),
    ("width-too-small", {"video": video(width=14)}, "video.width", "INVALID_VIDEO"),
    ("width-odd", {"video": video(width=641)}, "video.width", "INVALID_VIDEO"),
    ("width-too-big", {"video": video(width=1922)}, "video.width", "INVALID_VIDEO"),
    ("height-odd", {"video": video(height=481)}, "video.height", "INVALID_VIDEO"),
    ("height-too-big", {"video": video(height=1082)}, "video.height", "INVALID_VIDEO"),
    ("fps-too-high", {"video": video(fps=61)}, "video.fps", "INVALID_VIDEO"),
    ("idle-zero", {"idle_timeout": seconds(0)}, "idle_timeout", "INVALID_DURATION"),
    ("idle-negative", {"idle_timeout": seconds(-5)}, "idle_timeout", "INVALID_DURATION"),
    ("idle-out-of-range", {"idle_timeout": seconds(2**62)}, "idle_timeout", "INVALID_DURATION"),
    ("idle-int64-max", {"idle_timeout": seconds(2**63 - 1)}, "idle_timeout", "INVALID_DURATION"),
    ("idle-mixed-signs", {"idle_timeout": seconds(5, -1)}, "idle_timeout", "INVALID_DURATION"),
    ("max-duration-zero", {"max_duration": seconds(0)}, "max_duration", "INVALID_DURATION"),
    ("max-duration-negative", {"max_duration": seconds(-1)}, "max_duration", "INVALID_DURATION"),
    ("max-duration-over-provider-limit", {"max_duration": seconds(24 * 3600 + 1)}, "max_duration",
     "INVALID_DURATION"),
    ("label-key-uppercase", {"labels": {"Team": "x"}}, "labels[Team]", "INVALID_LABELS"),
    ("label-key-digit-first", {"labels": {"1team": "x"}}, "labels[1team]", "INVALID_LABELS"),
    ("label-value-too-long", {"labels": {"team": "x" * 257}}, "labels[team]", "INVALID_LABELS"),
    ("too-many-labels", {"labels": {f"k{i}": "v" for i in range(33)}}, "labels", "INVALID_LABELS"),
    ("unknown-option", {"provider_options": {"colour": "blue"}}, "provider_options[colour]",
     "INVALID_PROVIDER_OPTION"),
    ("option-not-integer", {"provider_options": {"seed": "x"}}, "provider_options[seed]", "INVALID_PROVIDER_OPTION"),
    ("option-out-of-range", {"provider_options": {"prebuffer_ms": "501"}}, "provider_options[prebuffer_ms]",
     "INVALID_PROVIDER_OPTION"),
    ("request-id-not-uuid", {"request_id": "retry-1"}, "request_id", "INVALID_REQUEST_ID"),
    ("session-id-uppercase", {"session_id": "Call-1"}, "session_id", "INVALID_SESSION_ID"),
    ("session-id-digit-first", {"session_id": "1call"}, "session_id", "INVALID_SESSION_ID"),
    ("session-id-too-long", {"session_id": "s" * 64}, "session_id", "INVALID_SESSION_ID"),
    ("session-id-slash", {"session_id": "a/b"}, "session_id", "INVALID_SESSION_ID"),
]


@pytest.mark.parametrize(("fields", "field_name", "reason"), [c[1:] for c in START_CASES],
                         ids=[c[0] for c in START_CASES])
async def test_start_session_invalid_argument(gateway: GatewayServer, fields: dict[str, Any], field_name: str,
                                              reason: str) -> None:
    async with Conn(gateway) as conn:
        invalid(field_name, reason).check(await failure(conn.call("StartSession", start_request(**fields))))
        assert await conn.count() == 0  # nothing was started, nothing is remembered


BAD_NAMES = ["nope", "", "sessions/", "sessions/Upper", "sessions/a/b", "projects/p/sessions/a", "sessions/-a",
             "sessions/" + "a" * 64, "sessions/a b"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_session_name(client: AvatarGatewayClient, name: str) -> None:
    want = invalid("name", "INVALID_SESSION_NAME")
    want.check(await failure(client.get_session(name)))
    want.check(await failure(client.end_session(name)))
    want.check(await failure(first_watch_item(client, name)))


def token(text: bytes) -> str:
    """A page token made of `text` (the gateway's own are base64 of "v3:<show_ended 0|1>:<create time ns>:<session
    name>")."""
    return base64.urlsafe_b64encode(text).decode()


@pytest.mark.parametrize(("page_size", "page_token", "field_name", "reason"), [
    (-1, "", "page_size", "INVALID_PAGE_SIZE"),
    (1001, "", "page_size", "INVALID_PAGE_SIZE"),
    (0, "garbage", "page_token", "INVALID_PAGE_TOKEN"),
    (0, "a", "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v2:5"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v2:five:sessions/a"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v1:5"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v3:1:sessions/a"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v3:2:5:sessions/a"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"v2:5:sessions/a"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, token(b"\xff\xfe:1"), "page_token", "INVALID_PAGE_TOKEN"),
    (0, "sessions/\u00e9", "page_token", "INVALID_PAGE_TOKEN"),
])
async def test_list_sessions_invalid_argument(client: AvatarGatewayClient, page_size: int, page_token: str,
                                              field_name: str, reason: str) -> None:
    await client.start_session("mock", room_name="r", agent_identity="a")
    err = await failure(client.list_sessions_page(page_size=page_size, page_token=page_token))
    invalid(field_name, reason).check(err)


async def test_page_token_is_good_only_with_the_show_ended_it_was_issued_for(client: AvatarGatewayClient) -> None:
    """AIP-158: a page token from a call with show_ended=true is refused by one with show_ended=false."""
    for i in range(3):
        await client.start_session("mock", room_name="r", agent_identity="a", session_id=f"paged-{i}")
    _, next_token = await client.list_sessions_page(page_size=1, show_ended=True)
    assert next_token
    err = await failure(client.list_sessions_page(page_size=1, page_token=next_token, show_ended=False))
    invalid("page_token", "PAGE_TOKEN_MISMATCH").check(err)
    second, _ = await client.list_sessions_page(page_size=1, page_token=next_token, show_ended=True)
    assert [s.name for s in second] == ["sessions/paged-1"]


# ---------------------------------------------------------------------------------------------------------------
# NOT_FOUND
# ---------------------------------------------------------------------------------------------------------------
async def test_unknown_session_not_found(client: AvatarGatewayClient) -> None:
    name = "sessions/nope"
    not_found(name).check(await failure(client.get_session(name)))
    not_found(name).check(await failure(client.end_session(name)))
    not_found(name).check(await failure(first_watch_item(client, name)))
    # StreamAudio of an unknown session: in test_bad_stream_input ("unknown-session")


# ---------------------------------------------------------------------------------------------------------------
# Bad StreamAudio input: the gateway keeps serving
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamCase:
    id: str
    requests: Callable[[str], list[Req]]  # given the target session's name
    expect: Expect
    segments: int = 0  # segments the bad stream opened before its bad input
    target: str = "b"  # "b" (ACTIVE), "ended" (an ENDED session) or "unknown"
    overrides: Mapping[str, object] = field(default_factory=dict)


def two_segments_then(bad: Req, channels: int = 1) -> Callable[[str], list[Req]]:
    return lambda name: [*two_segments(name, channels), bad]


STREAM_CASES = [
    StreamCase("first-not-config", lambda n: [audio(b"\0\0")], invalid("config", "CONFIG_REQUIRED")),
    StreamCase("first-segment-end", lambda n: [SEGMENT_END], invalid("config", "CONFIG_REQUIRED")),
    StreamCase("no-message-at-all", lambda n: [], invalid("config", "CONFIG_REQUIRED")),
    StreamCase("empty-first-message", lambda n: [Req()], invalid("config", "CONFIG_REQUIRED")),
    StreamCase("missing-session", lambda n: [cfg("")], invalid("config.session", "MISSING_FIELD")),
    StreamCase("bad-session-name", lambda n: [cfg(n.removeprefix("sessions/"))],
               invalid("config.session", "INVALID_SESSION_NAME")),
    StreamCase("no-format", lambda n: [Req(config=spb.StreamAudioConfig(session=n))],
               invalid("config.format", "MISSING_FIELD")),
    StreamCase("rate-0", lambda n: [cfg(n, rate=0)], invalid("config.format.sample_rate_hz",
                                                              "UNSUPPORTED_SAMPLE_RATE")),
    StreamCase("rate-1e6", lambda n: [cfg(n, rate=10**6)], invalid("config.format.sample_rate_hz",
                                                                    "UNSUPPORTED_SAMPLE_RATE")),
    StreamCase("channels-0", lambda n: [cfg(n, channels=0)], invalid("config.format.channels",
                                                                      "UNSUPPORTED_CHANNELS")),
    StreamCase("channels-9", lambda n: [cfg(n, channels=9)], invalid("config.format.channels",
                                                                      "UNSUPPORTED_CHANNELS")),
    StreamCase("unknown-encoding", lambda n: [cfg(n, encoding=7)], invalid("config.format.encoding",
                                                                           "UNSUPPORTED_ENCODING")),
    StreamCase("unknown-session", lambda n: [cfg(n)], not_found("{target}"), target="unknown"),
    StreamCase("ended-session", lambda n: [cfg(n)],
               Expect(Code.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE", precondition=("SESSION_STATE", "{target}"),
                      metadata={"session": "{target}", "state": "ENDED"}), target="ended"),
    StreamCase("config-twice", lambda n: [*two_segments(n), cfg(n)], invalid("config", "CONFIG_ALREADY_SENT"),
               segments=2),
    StreamCase("empty-message", two_segments_then(Req()), invalid("request", "EMPTY_REQUEST"), segments=2),
    StreamCase("odd-byte-count", two_segments_then(audio(b"\0" * 641)), invalid("audio.pcm", "PARTIAL_SAMPLE_FRAME"),
               segments=2),
    StreamCase("stereo-not-multiple-of-4", two_segments_then(audio(b"\0" * 1282), channels=2),
               invalid("audio.pcm", "PARTIAL_SAMPLE_FRAME"), segments=2),
    StreamCase("chunk-of-2-mib", two_segments_then(audio(b"\0" * (2 << 20))),
               Expect(Code.RESOURCE_EXHAUSTED, "CHUNK_TOO_LARGE", quota="audio.pcm",
                      metadata={"limit_bytes": str(1 << 20)}), segments=2),
    # cap 1 s: 0.9 s closed + 0.05 s + 2 s are accepted (at most 0.95 s is queued when each arrives), the next
    # chunk is refused (about 3 s queued), so the refused chunk is the last one sent
    StreamCase("playout-buffer-over-cap", lambda n: [cfg(n), audio(pcm(0.9)), SEGMENT_END, audio(pcm(0.05)),
                                                     audio(pcm(2.0)), audio(pcm(0.02))],
               Expect(Code.RESOURCE_EXHAUSTED, "PLAYOUT_BUFFER_FULL", quota="playout_buffer",
                      metadata={"limit_ms": "1000"}), segments=2, overrides={"max_buffered_s": 1.0}),
]


@pytest.mark.parametrize("case", STREAM_CASES, ids=[c.id for c in STREAM_CASES])
async def test_bad_stream_input(make_gateway: MakeGateway, case: StreamCase) -> None:
    server = await make_gateway(**case.overrides)
    async with Conn(server) as conn:
        a = await conn.start("a-session")
        b = await conn.start("b-session")
        ended = await conn.start("ended-session")
        await conn.client.end_session(ended)
        target = {"b": b, "ended": ended, "unknown": "sessions/nope"}[case.target]
        async with playing(conn.client, a):  # session A streams through the whole bad call
            responses, err = await raw_stream(conn, case.requests(target))
        case.expect.check(err, target=target)
        check_bad_stream_responses(responses, case.segments)
        # the proto's contract: the status is also the stream's last response, in band
        assert responses and responses[-1].WhichOneof("response") == "error", [r.WhichOneof("response")
                                                                               for r in responses]
        assert (responses[-1].error.code, responses[-1].error.message) == (err.code.value[0], err.message)
        if case.segments:
            stats = (await conn.client.get_session(b)).stats
            assert (stats.segments_opened, stats.segments_finished, stats.segments_interrupted) == (case.segments,) * 3
        await assert_serves(conn.client, b)
        assert await conn.state(ended) == ENDED


async def test_message_over_grpc_limit(client: AvatarGatewayClient, gateway: GatewayServer) -> None:
    """A 5 MiB message is over the server's 4 MiB message limit: gRPC itself fails the call (RESOURCE_EXHAUSTED,
    no details: the gateway never sees the message); the session and the other stream are unaffected."""
    async with Conn(gateway) as conn:
        a = await conn.start("a-session")
        b = await conn.start("b-session")
        async with playing(client, a):
            call = conn.stub.StreamAudio(timeout=WAIT)
            await call.write(cfg(b))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async with asyncio.timeout(WAIT):
                    await call.write(audio(b"\0" * (5 << 20)))
                    async for _ in call:
                        pass
            assert info.value.code() is Code.RESOURCE_EXHAUSTED
        await assert_serves(client, b)


async def test_second_concurrent_stream(client: AvatarGatewayClient, gateway: GatewayServer) -> None:
    """A second StreamAudio on a session is FAILED_PRECONDITION; the first one keeps playing."""
    async with Conn(gateway) as conn:
        a = await conn.start("a-session")
        b = await conn.start("b-session")
        async with playing(client, a), playing(client, b):
            responses, err = await raw_stream(conn, [cfg(b)])
            Expect(Code.FAILED_PRECONDITION, "STREAM_ALREADY_OPEN", precondition=("SESSION_STREAM", "{b}"),
                   metadata={"session": "{b}"}).check(err, b=b)
            assert_only_error(responses, err)
        await assert_serves(client, b)


async def test_end_session_under_an_open_stream(client: AvatarGatewayClient) -> None:
    """Audio, segment_end, more audio, then EndSession while the stream is open: both segments finish
    interrupted, then session_ended, then the stream ends OK; a new stream on the session is FAILED_PRECONDITION."""
    async with asyncio.timeout(WAIT):
        name = (await client.start_session("mock", room_name="r", agent_identity="a")).name
        stream = client.stream_audio(name, sample_rate=16000, timeout=WAIT)
        await stream.open()
        events: list[PlaybackEvent] = []
        started = asyncio.Event()

        async def read() -> None:
            async for ev in stream:
                events.append(ev)
                if isinstance(ev, PlaybackStarted):
                    started.set()

        reader = asyncio.create_task(read())
        for c in chunks(speech(2.0)):
            await stream.send(c)
        assert await stream.end_segment() == 1
        for c in chunks(speech(0.2, seed=2)):
            assert await stream.send(c) == 2  # audio after segment_end: a second, open segment
        await started.wait()
        ended = await client.end_session(name)
        await reader  # the stream ends with OK right after session_ended
    assert (ended.state, ended.end_reason) == (ENDED, session_pb2.END_REASON_CLIENT_REQUEST)
    playback = without_warnings(events)
    assert playback[0] == PlaybackStarted(1)
    finished = [e for e in playback if isinstance(e, PlaybackFinished)]
    assert [(f.segment_id, f.interrupted) for f in finished] == [(1, True), (2, True)]
    assert isinstance(playback[-1], SessionEnded)
    assert playback[-1].reason == session_pb2.END_REASON_CLIENT_REQUEST
    assert playback.index(finished[-1]) < len(playback) - 1
    stats = (await client.get_session(name)).stats
    assert (stats.segments_opened, stats.segments_finished, stats.segments_interrupted) == (2, 2, 2)

    err = await failure(_open_and_send(client, name))
    Expect(Code.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE", precondition=("SESSION_STATE", "{n}"),
           metadata={"session": "{n}", "state": "ENDED"}).check(err, n=name)
    assert (await first_watch_item(client, name)).state == ENDED
    assert (await client.end_session(name)).state == ENDED  # idempotent


async def _open_and_send(client: AvatarGatewayClient, name: str) -> None:
    async with client.stream_audio(name, sample_rate=16000, timeout=WAIT) as stream:
        await stream.send(chunks(speech(0.1))[0])


# ---------------------------------------------------------------------------------------------------------------
# FAILED_PRECONDITION at start
# ---------------------------------------------------------------------------------------------------------------
async def test_livekit_not_configured(make_gateway: MakeGateway) -> None:
    server = await make_gateway(headless=False)
    async with Conn(server) as conn:
        err = await failure(conn.call("StartSession", start_request()))
        Expect(Code.FAILED_PRECONDITION, "LIVEKIT_NOT_CONFIGURED", precondition=("GATEWAY_CONFIG", "gateway")
               ).check(err)
        assert await conn.count() == 0


async def test_provider_disabled(make_gateway: MakeGateway) -> None:
    off = TestProvider("off", enabled=False)
    server = await gateway_with(make_gateway, off)
    async with Conn(server) as conn:
        err = await failure(conn.call("StartSession", start_request(provider="off")))
        Expect(Code.FAILED_PRECONDITION, "PROVIDER_DISABLED", precondition=("PROVIDER_CONFIG", "providers/off"),
               metadata={"provider": "off"}).check(err)
        assert off.starts == 0
        assert await conn.count() == 0


async def test_session_still_starting(make_gateway: MakeGateway) -> None:
    """While a session is STARTING StreamAudio is FAILED_PRECONDITION; it then starts normally."""
    gate = asyncio.Event()
    slow = TestProvider("slow", gate=gate)
    server = await gateway_with(make_gateway, slow)
    async with Conn(server) as conn:
        starting = asyncio.create_task(conn.start("slow-one", provider="slow"))
        async with asyncio.timeout(WAIT):
            await slow.entered.wait()
        name = "sessions/slow-one"
        assert (await first_watch_item(conn.client, name)).state == session_pb2.SESSION_STATE_STARTING
        responses, err = await raw_stream(conn, [cfg(name)])
        assert_only_error(responses, err)
        Expect(Code.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE", precondition=("SESSION_STATE", name),
               metadata={"state": "STARTING"}).check(err)
        gate.set()
        async with asyncio.timeout(WAIT):
            assert await starting == name
        await assert_serves(conn.client, name)


async def test_end_session_while_starting_cancels_the_start(make_gateway: MakeGateway) -> None:
    """EndSession on a STARTING session ends it: the provider's start is cancelled where it is, StartSession
    answers UNAVAILABLE ENDED_WHILE_STARTING, the session is ENDED (CLIENT_REQUEST) and nothing is left running."""
    slow = TestProvider("slow", gate=asyncio.Event())  # never opened: only the end can finish this start
    server = await gateway_with(make_gateway, slow)
    async with Conn(server) as conn:
        starting = asyncio.create_task(conn.call("StartSession", start_request(provider="slow",
                                                                                session_id="slow-one")))
        async with asyncio.timeout(WAIT):
            await slow.entered.wait()
        ended = await conn.client.end_session("sessions/slow-one")
        assert (ended.state, ended.end_reason) == (session_pb2.SESSION_STATE_ENDED,
                                                    session_pb2.END_REASON_CLIENT_REQUEST)
        Expect(Code.UNAVAILABLE, "ENDED_WHILE_STARTING", retry=True).check(await failure(starting))
        assert slow.cancelled == 1
        await conn.start("after")


# ---------------------------------------------------------------------------------------------------------------
# ALREADY_EXISTS and idempotent retries
# ---------------------------------------------------------------------------------------------------------------
async def test_session_id_taken(client: AvatarGatewayClient, gateway: GatewayServer) -> None:
    async with Conn(gateway) as conn:
        name = await conn.start("taken")
        err = await failure(conn.call("StartSession", start_request(session_id="taken")))
        Expect(Code.ALREADY_EXISTS, "SESSION_EXISTS", resource="sessions/taken",
               metadata={"session": "sessions/taken"}).check(err)
        assert await conn.count() == 1
        await assert_serves(client, name)


async def test_request_id_reused_with_other_parameters(make_gateway: MakeGateway) -> None:
    counting = TestProvider("counting")
    server = await gateway_with(make_gateway, counting)
    async with Conn(server) as conn:
        rid = str(uuid.uuid4())
        first = await conn.start(provider="counting", request_id=rid)
        for changed in ({"room": room(room_name="other")}, {"labels": {"team": "x"}}, {"session_id": "x"},
                        {"provider": "mock"}):
            changed_request = start_request(**{"provider": "counting", "request_id": rid, **changed})
            err = await failure(conn.call("StartSession", changed_request))
            Expect(Code.ALREADY_EXISTS, "REQUEST_ID_REUSED", resource=first,
                   metadata={"request_id": rid, "session": first}).check(err)
        assert counting.starts == 1
        assert await conn.count() == 1


async def test_request_id_reused_by_another_caller(make_gateway: MakeGateway) -> None:
    server = await make_gateway(api_keys=parse_api_keys(API_KEYS))
    async with Conn(server, api_key="k1") as alice, Conn(server, api_key="k2") as bob:
        rid = str(uuid.uuid4())
        await alice.start(request_id=rid)
        err = await failure(bob.call("StartSession", start_request(request_id=rid)))
        Expect(Code.ALREADY_EXISTS, "REQUEST_ID_REUSED", metadata={"request_id": rid}).check(err)
        assert "session" not in err.metadata, "alice's session is not bob's to learn"
        assert await bob.count() == 0


async def test_retry_with_same_request_id_starts_nothing_new(make_gateway: MakeGateway) -> None:
    """Retries (one while the first start is still in progress, one after) return the same session; the provider
    is started once and ListSessions shows one session."""
    gate = asyncio.Event()
    counting = TestProvider("counting", gate=gate)
    server = await gateway_with(make_gateway, counting)
    async with Conn(server) as conn:
        request = start_request(provider="counting", request_id=str(uuid.uuid4()))
        first = asyncio.create_task(conn.call("StartSession", request))
        async with asyncio.timeout(WAIT):
            await counting.entered.wait()
        second = asyncio.create_task(conn.call("StartSession", request))
        gate.set()
        async with asyncio.timeout(WAIT):
            one, two = await asyncio.gather(first, second)
        third = await conn.call("StartSession", request)
        assert one.session.name == two.session.name == third.session.name
        assert third.session.state == ACTIVE
        assert counting.starts == 1
        assert await conn.count() == 1
        assert await conn.count(show_ended=False) == 1


async def test_failed_start_frees_its_request_id(make_gateway: MakeGateway) -> None:
    flaky = TestProvider("flaky", failures=[ProviderError.unavailable("upstream 503", "PROVIDER_ERROR")])
    server = await gateway_with(make_gateway, flaky)
    async with Conn(server) as conn:
        request = start_request(provider="flaky", request_id=str(uuid.uuid4()), session_id="flaky-one")
        err = await failure(conn.call("StartSession", request))
        Expect(Code.UNAVAILABLE, "PROVIDER_ERROR", retry=True).check(err)
        got = await conn.client.get_session("sessions/flaky-one")
        assert (got.state, got.end_reason) == (FAILED, session_pb2.END_REASON_START_FAILED)
        resp = await conn.call("StartSession", request)  # same request and session_id: a failed start made nothing
        assert resp.session.name == "sessions/flaky-one" and resp.session.state == ACTIVE
        assert flaky.starts == 2
        other = await failure(conn.call("StartSession", start_request(provider="flaky", session_id="flaky-one")))
        Expect(Code.ALREADY_EXISTS, "SESSION_EXISTS", resource="sessions/flaky-one").check(other)  # now it exists


# ---------------------------------------------------------------------------------------------------------------
# RESOURCE_EXHAUSTED: too many sessions (chunk size and playout buffer: test_bad_stream_input)
# ---------------------------------------------------------------------------------------------------------------
async def test_too_many_sessions(make_gateway: MakeGateway) -> None:
    server = await make_gateway(max_sessions=1)
    async with Conn(server) as conn:
        first = await conn.start("first")
        err = await failure(conn.call("StartSession", start_request(session_id="second")))
        Expect(Code.RESOURCE_EXHAUSTED, "TOO_MANY_SESSIONS", quota="sessions", metadata={"limit": "1"}).check(err)
        not_found("sessions/second").check(await failure(conn.client.get_session("sessions/second")))
        await assert_serves(conn.client, first)
        await conn.client.end_session(first)
        await conn.start("second")  # room again once the first has ended


# ---------------------------------------------------------------------------------------------------------------
# INTERNAL without leaking, UNAVAILABLE with RetryInfo
# ---------------------------------------------------------------------------------------------------------------
class KeyLeak(KeyError):
    """An unexpected exception whose text is a secret."""


@pytest.mark.parametrize("failure_exc", [
    RuntimeError(f"connect to https://api.example?key={SECRET} failed"),
    KeyLeak(SECRET),
    # a provider error of no known class is INTERNAL with no text of its own, and its text stays in the log
    ProviderError.internal(f"provider said 500 {SECRET}"),
], ids=["unexpected-exception", "key-error", "non-retryable-provider-error"])
async def test_internal_error_leaks_nothing(make_gateway: MakeGateway, failure_exc: BaseException) -> None:
    broken = TestProvider("broken", failures=[failure_exc])
    server = await gateway_with(make_gateway, broken)
    async with Conn(server) as conn:
        call = conn.stub.StartSession(start_request(provider="broken", session_id="broken-one"), timeout=WAIT)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        raw = info.value
        assert raw.code() is Code.INTERNAL
        assert raw.details() == "Internal error."
        everything = repr(raw.trailing_metadata()) + repr(raw.initial_metadata()) + repr(raw.debug_error_string())
        assert SECRET not in everything
        err = from_rpc_error(raw)
        assert err.message == "Internal error."
        INTERNAL.check(err)
        assert all(SECRET not in repr(d) for d in err.details)
        got = await conn.client.get_session("sessions/broken-one")
        assert (got.state, got.end_reason) == (FAILED, session_pb2.END_REASON_START_FAILED)
        assert SECRET not in got.end_detail
        await conn.start("after")  # the gateway still serves


async def test_internal_error_in_a_stream_leaks_nothing(make_gateway: MakeGateway) -> None:
    """The provider's push_audio raises: the stream's open segment finishes interrupted, then INTERNAL
    "Internal error." with none of the exception text; another session keeps streaming."""
    server = await gateway_with(make_gateway, TestProvider("exploding", exploding=True))
    async with Conn(server) as conn:
        a = await conn.start("a-session")
        b = await conn.start("b-session", provider="exploding")
        async with playing(conn.client, a):
            responses, err = await raw_stream(conn, [cfg(b), audio(pcm(0.1)), audio(pcm(0.1))])
        INTERNAL.check(err)
        assert err.message == "Internal error."
        check_bad_stream_responses(responses, 1)


async def test_provider_unavailable(make_gateway: MakeGateway) -> None:
    down = TestProvider("down", failures=[ProviderError.unavailable("the provider is over capacity",
                                                                    "PROVIDER_OVERLOADED")])
    server = await gateway_with(make_gateway, down)
    async with Conn(server) as conn:
        err = await failure(conn.call("StartSession", start_request(provider="down")))
        Expect(Code.UNAVAILABLE, "PROVIDER_OVERLOADED", retry=True).check(err)
        assert err.retry_after == pytest.approx(2.0)
        assert err.message == "the provider is over capacity"
        assert await conn.count(show_ended=False) == 0


async def test_start_timeout(make_gateway: MakeGateway) -> None:
    stuck = TestProvider("stuck", gate=asyncio.Event())  # never opened
    server = await gateway_with(make_gateway, stuck, start_timeout_s=0.2)
    async with Conn(server) as conn:
        err = await failure(conn.call("StartSession", start_request(provider="stuck", session_id="stuck-one")))
        Expect(Code.UNAVAILABLE, "START_TIMEOUT", retry=True).check(err)
        got = await conn.client.get_session("sessions/stuck-one")
        assert (got.state, got.end_reason) == (FAILED, session_pb2.END_REASON_START_FAILED)


async def test_shutting_down(client: AvatarGatewayClient, gateway: GatewayServer) -> None:
    gateway.manager.begin_shutdown()
    async with Conn(gateway) as conn:
        err = await failure(conn.call("StartSession", start_request()))
        Expect(Code.UNAVAILABLE, "SHUTTING_DOWN", retry=True).check(err)
        assert await conn.count() == 0



# ---------------------------------------------------------------------------------------------------------------
# Failures at awkward moments
# ---------------------------------------------------------------------------------------------------------------
class _GoneBeforeReady:
    """A servicer context whose client goes away while the gateway writes `ready`: the write waits until the test
    has cancelled the call, then fails the way a write on a cancelled call does."""

    def __init__(self, context: Any, writing: asyncio.Event, cancelled: asyncio.Event) -> None:
        self._context = context
        self._writing = writing
        self._cancelled = cancelled

    async def write(self, message: Message) -> None:
        self._writing.set()
        await self._cancelled.wait()
        raise asyncio.CancelledError

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def test_stream_cancelled_while_ready_is_written(client: AvatarGatewayClient, gateway: GatewayServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that dies before its ready is sent must not keep the session's audio slot: the next stream on the
    session is served, not refused with STREAM_ALREADY_OPEN."""
    original = StreamAudioCall.run
    writing, cancelled = asyncio.Event(), asyncio.Event()

    async def run_once(self: StreamAudioCall, requests: AsyncIterator[Req], context: Any) -> None:
        monkeypatch.setattr(StreamAudioCall, "run", original)
        await original(self, requests, _GoneBeforeReady(context, writing, cancelled))

    async with Conn(gateway) as conn:
        b = await conn.start("b-session")
        monkeypatch.setattr(StreamAudioCall, "run", run_once)
        call = conn.stub.StreamAudio(timeout=WAIT)
        await call.write(cfg(b))
        async with asyncio.timeout(WAIT):
            await writing.wait()
        call.cancel()
        cancelled.set()
        await assert_serves(client, b)


async def test_session_completing_its_start_during_shutdown(make_gateway: MakeGateway) -> None:
    """Shutdown ends a session that is still STARTING; when its provider start then completes, the session must
    not come back to life (ACTIVE, with playout tasks that keep shutdown from ever finishing): StartSession is
    UNAVAILABLE and the gateway stops."""
    gate = asyncio.Event()
    slow = TestProvider("slow", gate=gate)
    server = await gateway_with(make_gateway, slow)
    async with Conn(server) as conn:
        starting = asyncio.create_task(conn.call("StartSession", start_request(provider="slow", session_id="late")))
        async with asyncio.timeout(WAIT):
            await slow.entered.wait()
        session = server.manager.resolve(ANONYMOUS, "sessions/late")
        stopping = asyncio.create_task(server.stop(0.0))
        async with asyncio.timeout(WAIT):
            await session.wait_ended()
        gate.set()
        Expect(Code.UNAVAILABLE, "SHUTTING_DOWN", retry=True).check(await failure(starting))
        async with asyncio.timeout(WAIT):
            await stopping
        assert session.state is State.ENDED
        assert not server.manager.active()


class _NoFramesProvider(TestProvider):
    """Starts, but its frame stream fails at once (before the first frame)."""

    async def start(self, spec: SessionSpec) -> ProviderSession:
        self.starts += 1
        return _NoFrames(spec.video)


class _NoFrames(MockSession):
    async def frames(self) -> AsyncIterator[AvatarFrame]:
        raise ProviderError.unavailable("the render node went away", "RENDER_NODE_LOST")
        yield  # an async generator


async def test_provider_failing_before_its_first_frame(make_gateway: MakeGateway) -> None:
    server = await gateway_with(make_gateway, _NoFramesProvider("no-frames"), start_timeout_s=2.0)
    async with Conn(server) as conn:
        err = await failure(conn.call("StartSession", start_request(provider="no-frames", session_id="nf")))
        got = await conn.client.get_session("sessions/nf")
        assert (got.state, got.end_reason) == (FAILED, session_pb2.END_REASON_START_FAILED)
        Expect(Code.UNAVAILABLE, "RENDER_NODE_LOST", retry=True).check(err)


async def test_agent_writing_past_the_playout_cap_sees_the_quota_failure(make_gateway: MakeGateway) -> None:
    server = await make_gateway(max_buffered_s=1.0)
    async with Conn(server) as conn:
        name = await conn.start("b-session")

        async def stream_five_seconds() -> None:
            async with conn.client.stream_audio(name, sample_rate=16000, timeout=WAIT) as stream:
                for c in chunks(speech(5.0)):
                    await stream.send(c)
            async for _ in stream:
                pass

        err = await failure(stream_five_seconds())
        Expect(Code.RESOURCE_EXHAUSTED, "PLAYOUT_BUFFER_FULL", quota="playout_buffer").check(err)


# ---------------------------------------------------------------------------------------------------------------
# Bytes that are not a protobuf message
# ---------------------------------------------------------------------------------------------------------------
CORRUPT = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, a length far beyond the message


@pytest.mark.parametrize("method", ["StartSession", "GetSession", "EndSession", "ListSessions", "WatchSession",
                                    "ListProviders"])
async def test_corrupt_request_bytes_are_invalid_argument(gateway: GatewayServer, method: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """INVALID_ARGUMENT with a BadRequest, one log line without a traceback, and the gateway keeps serving."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        path = f"/avatar.v1.AvatarProvider/{method}"
        if method == "WatchSession":
            call: Any = channel.unary_stream(path)(CORRUPT, timeout=WAIT)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in call:
                    pass
        else:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(path)(CORRUPT, timeout=WAIT)
    err = from_rpc_error(info.value)
    Expect(Code.INVALID_ARGUMENT, "UNDECODABLE_REQUEST", bad_field="request").check(err)
    assert "DecodeError" not in err.message and "Unexpected" not in err.message
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged for a bad request"
    async with Conn(gateway) as conn:
        await conn.start("after-corrupt")


# ---------------------------------------------------------------------------------------------------------------
# API key settings refused at startup
# ---------------------------------------------------------------------------------------------------------------
def test_one_api_key_for_two_principals_is_refused() -> None:
    with pytest.raises(ValueError, match="repeats the API key of 'alice'") as info:
        parse_api_keys("alice:shared-secret-key,bob:shared-secret-key")
    assert "shared-secret-key" not in str(info.value)


async def test_a_key_limited_to_an_unknown_provider_is_refused(make_gateway: MakeGateway) -> None:
    with pytest.raises(ValueError, match=r"'bob' is limited to unknown provider\(s\) mokc; known: anam, .*mock"):
        await make_gateway(api_keys=parse_api_keys("alice:k1,bob:k2:mokc"))


async def test_the_cli_refuses_bad_api_key_settings() -> None:
    for spec, message in (("a:k,b:k", "repeats the API key"), ("a:k:nope", "unknown provider(s) nope")):
        proc = await asyncio.create_subprocess_exec(
            str(gateway_executable()), "serve", "--headless", "--listen", "127.0.0.1:0",
            env=clean_env(AVATAR_GATEWAY_API_KEYS=spec), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(WAIT):
            _, err = await proc.communicate()
        assert proc.returncode == 2 and message in err.decode(), err.decode()
