"""The fake Simli server (``fakes.simli``) driving the REAL ``simli-ai`` 2.1.0 client over its P2P transport.

The HTTP errors and the unit tests need no WebRTC and run anywhere; the sessions need the network namespace of
``scripts/netns-run`` and skip outside it:

    scripts/netns-run .venv/bin/python -m pytest -q tests/fakes -p no:cacheprovider

No test sleeps to synchronise and none asserts a duration: every wait is on an event or a condition (the fake's
``wait_for``, the client's callbacks, the frames received), bounded by TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from av import AudioFrame, VideoFrame
from simli import SimliAPIError, SimliClient, SimliConfig, SimliConnectionError, SimliExceptions, SimliSessionError
from simli.events import SimliEvent
from simli.simli import TransportMode

from fakes.simli import FakeSimli, FakeSimliSession, Playout, StopCause
from fakes.simli.changes import Changes
from fakes.simli.media import FaceVideoTrack, PlayoutAudioTrack
from fakes.simli.token_request import validate_token_body
from loopback import in_namespace, loopback_host, not_in_namespace_reason
from providers.mock.face import FaceRenderer, mouth_opening_i420, mouth_opening_rgb
from viewer.sync import av_offset, envelope_level

TIMEOUT = 20.0
API_KEY = "test-simli-key"
BROKE_KEY = "test-simli-key-without-credits"
FACE = "test-face"
CLOSED_MOUTH = 0.1  # mouth_opening of a closed mouth, after VP8, is well below this
OPEN_MOUTH = 0.5

requires_netns = pytest.mark.skipif(not_in_namespace_reason() is not None, reason=not_in_namespace_reason() or "")


def speech(seconds: float, *, seed: int = 1) -> np.ndarray:
    """Deterministic speech-like 16 kHz mono int16: a voiced tone with a 4 Hz syllable envelope (as tests/conftest.py's,
    without importing the gateway's test fixtures)."""
    n = round(seconds * 16000)
    t = np.arange(n) / 16000
    rng = np.random.default_rng(seed)
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t)
    voice = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.05 * rng.standard_normal(n)
    return (envelope * voice * 9000).astype(np.int16)


def at(frame: AudioFrame | VideoFrame) -> Fraction:
    """A frame's presentation time in seconds."""
    assert frame.pts is not None and frame.time_base is not None
    return Fraction(frame.pts) * frame.time_base


def _fake_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("fake-simli") and not t.done())


@pytest.fixture
async def fake() -> AsyncIterator[FakeSimli]:
    """A fake Simli on the namespace's address (127.0.0.1 outside it, for the HTTP-only tests). After the test no
    session may be open (waited for, bounded) and nothing the fake started may be left running."""
    host = loopback_host() if in_namespace() else "127.0.0.1"
    async with FakeSimli(host, 0, api_keys={API_KEY, BROKE_KEY}, faces={FACE}, billing_blocked={BROKE_KEY}) as server:
        yield server
        with contextlib.suppress(TimeoutError):
            await server.wait_open_sessions(0, TIMEOUT)
        assert server.open_sessions == 0, [s.index for s in server.sessions if s.is_open]
    assert not _fake_tasks()


@pytest.fixture
async def make_client(fake: FakeSimli) -> AsyncIterator[Callable[..., SimliClient]]:
    """Real SimliClients aimed at the fake (P2P, one try); every one is stopped at teardown, before the fake."""
    made: list[SimliClient] = []

    def make(config: SimliConfig | None = None, *, api_key: str = API_KEY, retry_count: int = 1) -> SimliClient:
        client = SimliClient(api_key, config if config is not None else SimliConfig(faceId=FACE),
                             simliURL=fake.url, retry_count=retry_count, transport_mode=TransportMode.P2P)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.stop()


class Media:
    """Drains both of the client's frame iterators (unbounded queues underneath) and records what arrives:
    (arrival time, mouth opening read from the pixels) per video frame, (arrival time, loudness 0..1) per audio
    frame."""

    def __init__(self, client: SimliClient, video_format: str = "rgb24") -> None:
        self.changes = Changes()
        self.video: list[tuple[float, float]] = []
        self.audio: list[tuple[float, float]] = []
        self.video_sizes: set[tuple[int, int]] = set()
        self.audio_formats: set[tuple[str, str, int, int]] = set()
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._read_video(client, video_format)),
                       asyncio.create_task(self._read_audio(client))]

    async def _read_video(self, client: SimliClient, video_format: str) -> None:
        async for frame in client.getVideoStreamIterator(video_format):
            if video_format == "rgb24":
                opening = mouth_opening_rgb(frame.to_ndarray())
            else:  # "yuva420p": the client passes aiortc's yuv420p frames through as they are
                opening = mouth_opening_i420(frame.to_ndarray(format="yuv420p"), frame.width, frame.height)
            self.video.append((self._loop.time(), opening))
            self.video_sizes.add((frame.width, frame.height))
            self.changes.notify()

    async def _read_audio(self, client: SimliClient) -> None:
        async for frame in client.getAudioStreamIterator():
            left = frame.to_ndarray().reshape(-1)[::2]
            self.audio.append((self._loop.time(), envelope_level(left)))
            self.audio_formats.add((frame.format.name, frame.layout.name, frame.sample_rate, frame.samples))
            self.changes.notify()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        await self.changes.wait_for(predicate, TIMEOUT)

    async def wait_frames(self, video: int = 5, audio: int = 5) -> None:
        await self.wait_for(lambda: len(self.video) >= video and len(self.audio) >= audio)

    async def ended(self) -> None:
        """Both iterators ended (their tasks re-raise whatever broke them)."""
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*self._tasks)


class Events:
    """SPEAK / SILENT callbacks of a started client, in order, with their arrival times."""

    def __init__(self, client: SimliClient) -> None:
        self.changes = Changes()
        self.names: list[str] = []
        self.times: list[float] = []
        for event in (SimliEvent.SPEAK, SimliEvent.SILENT):
            client.registerEventCallback(event, self._callback(event.name))

    def _callback(self, name: str) -> Callable[[], Awaitable[None]]:
        async def callback() -> None:
            self.names.append(name)
            self.times.append(asyncio.get_running_loop().time())
            self.changes.notify()

        return callback

    def time_of(self, name: str, nth: int = 1) -> float:
        return [t for n, t in zip(self.names, self.times, strict=True) if n == name][nth - 1]

    async def wait_count(self, name: str, count: int) -> None:
        await self.changes.wait_for(lambda: self.names.count(name) >= count, TIMEOUT)


async def start_session(fake: FakeSimli, client: SimliClient) -> FakeSimliSession:
    await client.start()
    return await fake.wait_session(len(fake.sessions) - 1, TIMEOUT)


# ---------------------------------------------------------------------------------------------------------------
# HTTP: errors as simli-ai reads them (no WebRTC involved: the client fails before making its peer connection)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "status", "code"), [
    ("wrong_key", 401, SimliExceptions.INVALID_API_KEY),
    ("no_key", 401, SimliExceptions.INVALID_API_KEY),
    ("billing", 402, SimliExceptions.BILLING_ERROR),
    ("unknown_face", 400, SimliExceptions.INVALID_FACE_ID),
    ("missing_face_id", 422, SimliExceptions.UNKNOWN_ERROR),
    ("wrong_type", 422, SimliExceptions.UNKNOWN_ERROR),
    ("outage", 503, SimliExceptions.UNKNOWN_ERROR),
    ("ice_outage", 502, SimliExceptions.UNKNOWN_ERROR),
])
async def test_http_errors_surface_as_simli_api_errors(fake: FakeSimli, make_client: Callable[..., SimliClient],
                                                      case: str, status: int, code: SimliExceptions) -> None:
    config, key = SimliConfig(faceId=FACE), API_KEY
    if case == "wrong_key":
        key = "not-a-key"
    elif case == "no_key":
        key = ""
    elif case == "billing":
        key = BROKE_KEY
    elif case == "unknown_face":
        config = SimliConfig(faceId="no-such-face")
    elif case == "missing_face_id":
        config = SimliConfig(faceId=None)  # toRequest() leaves None out
    elif case == "wrong_type":
        config = SimliConfig(faceId=FACE, maxIdleTime="soon")
    elif case == "outage":
        fake.fail_token(503, "Service Unavailable")
    elif case == "ice_outage":
        fake.fail_ice(502, text="Bad Gateway")
    client = make_client(config, api_key=key)

    with pytest.raises(SimliAPIError) as info:
        await client.start()

    error = info.value
    assert (error.status_code, error.code, error.retryable) == (status, code, status >= 500)
    if case != "ice_outage":
        assert fake.token_requests[-1].status == status
    if status == 422:
        details = json.loads(error.detail)
        field = "faceId" if case == "missing_face_id" else "maxIdleTime"
        assert [d["loc"] for d in details] == [["body", field]]
        assert details[0]["type"] == ("missing" if case == "missing_face_id" else "float_type")
    assert fake.sessions == []


async def test_a_retry_switches_the_client_to_livekit(fake: FakeSimli,
                                                      make_client: Callable[..., SimliClient]) -> None:
    """simli-ai's start() retries a 5xx, then tries the LiveKit transport (livekit.rtc is importable here), which
    this fake does not serve: a client must pin retry_count=1 (or guard) to stay on P2P."""
    fake.fail_token(503, "Service Unavailable")
    client = make_client(retry_count=2)

    with pytest.raises(SimliAPIError) as info:
        await client.start()

    assert info.value.status_code == 404  # /compose/webrtc/livekit
    assert client.transport_mode is TransportMode.LIVEKIT
    assert [r.status for r in fake.token_requests] == [503, 200]
    assert fake.sessions == []


@pytest.mark.parametrize("refusal_status", [None, 401])
async def test_an_expired_token_is_refused_on_the_websocket(fake: FakeSimli, make_client: Callable[..., SimliClient],
                                                            refusal_status: int | None) -> None:
    fake.token_lifetime = 0
    fake.invalid_token_status = refusal_status

    with pytest.raises((SimliSessionError, SimliAPIError)) as info:
        await make_client().start()

    if refusal_status is None:  # upgraded, then ERROR: ...
        assert isinstance(info.value, SimliSessionError)
        assert info.value.message == "Invalid session token"
    else:  # refused upgrade: simli-ai gives websocket HTTP errors no code
        assert isinstance(info.value, SimliAPIError)
        assert (info.value.status_code, info.value.code) == (refusal_status, SimliExceptions.UNKNOWN_ERROR)
    assert len(fake.rejected_tokens) == 1 and fake.sessions == []


def test_token_body_validation() -> None:
    ok = validate_token_body({"faceId": "f", "maxIdleTime": 0.5, "maxSessionLength": 2, "streaming_width": 1024,
                              "streaming_height": 576}, default_width=512, default_height=512)
    assert not isinstance(ok, list)
    assert (ok.face_id, ok.max_idle_time, ok.max_session_length, ok.width, ok.height) == ("f", 0.5, 2.0, 1024, 576)
    defaults = validate_token_body({"faceId": "f"}, default_width=512, default_height=512)
    assert not isinstance(defaults, list) and (defaults.width, defaults.height) == (512, 512)

    errors = validate_token_body({"faceId": 7, "handleSilence": "yes", "maxIdleTime": 0, "model": "x",
                                  "streaming_width": 256}, default_width=512, default_height=512)
    assert isinstance(errors, list)
    assert [(e["type"], e["loc"]) for e in errors] == [
        ("string_type", ["body", "faceId"]), ("bool_type", ["body", "handleSilence"]),
        ("greater_than", ["body", "maxIdleTime"]), ("enum", ["body", "model"]),
        ("greater_than_equal", ["body", "streaming_width"])]
    assert validate_token_body([], default_width=512, default_height=512)[0]["type"] == (  # type: ignore[index]
        "model_attributes_type")


# ---------------------------------------------------------------------------------------------------------------
# The fake's own media, without WebRTC: one clock, the same audio on both tracks
# ---------------------------------------------------------------------------------------------------------------
class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_each_video_frame_shows_the_audio_that_starts_playing_with_it() -> None:
    clock = ManualClock()
    playout = Playout(clock)
    renderer = FaceRenderer(128, 128)
    audio, video = PlayoutAudioTrack(playout), FaceVideoTrack(playout, renderer, 30.0)
    voice = speech(1.0)
    playout.enqueue(bytes(2 * 1600))  # 100 ms of silence, then the voice
    playout.enqueue(voice.tobytes())

    audio_frames, video_frames = [await audio.recv()], [await video.recv()]  # both start at the origin (t = 0)
    clock.now = 10.0  # every later frame is already due: no pacing sleep
    for _ in range(49):
        audio_frames.append(await audio.recv())
    for _ in range(29):
        video_frames.append(await video.recv())

    # The audio track carries exactly the queued samples (each repeated 3 times, both channels), frame k at k*20 ms.
    played = np.concatenate([f.to_ndarray().reshape(-1)[::6] for f in audio_frames])
    expected = np.concatenate([np.zeros(1600, np.int16), voice])[:16000]
    assert np.array_equal(played, expected)
    assert {(f.format.name, f.layout.name, f.sample_rate, f.samples) for f in audio_frames} == {
        ("s16", "stereo", 48000, 960)}
    assert [at(f) for f in audio_frames] == [Fraction(k, 50) for k in range(50)]
    # Video frame j is at j/30 s and its mouth is the loudness of the samples that start playing at j/30 s.
    assert [at(f) for f in video_frames] == [Fraction(j, 30) for j in range(30)]
    for j, frame in enumerate(video_frames):
        level = renderer.level_for(played[j * 16000 // 30:(j + 1) * 16000 // 30])
        opening = mouth_opening_i420(frame.to_ndarray(format="yuv420p"), 128, 128)
        assert opening == renderer.expected_opening(level)
    assert max(mouth_opening_i420(f.to_ndarray(format="yuv420p"), 128, 128) for f in video_frames) > OPEN_MOUTH
    audio.stop()
    video.stop()


def test_playout_speak_silent_skip_and_play_immediate() -> None:
    events: list[tuple[str, int]] = []
    playout = Playout(lambda: 0.0)
    playout.on_speak = lambda: events.append(("SPEAK", playout.end))
    playout.on_silent = lambda: events.append(("SILENT", playout.end))
    voice = np.full(640, 3000, np.int16)

    def take(windows: int) -> np.ndarray:
        return np.concatenate([playout.take("audio", playout.end, playout.end + 320) for _ in range(windows)])

    # silence, then speech, then trailing silence still queued: SILENT where the speech ends, not at the drain
    playout.enqueue(bytes(2 * 640))
    playout.enqueue(voice.tobytes())
    playout.enqueue(bytes(2 * 3200))
    take(2)
    assert events == []
    take(2)
    assert events == [("SPEAK", 640)]
    take(1)
    assert events == [("SPEAK", 640), ("SILENT", 1280)]
    assert playout.queued_samples == 3200 - 320

    # SKIP: the queue is dropped, SILENT as the next window starts
    events.clear()
    playout.clear()
    playout.enqueue(np.full(16000, 3000, np.int16).tobytes())
    take(2)
    assert playout.clear() == 16000 - 640
    take(1)
    assert [name for name, _ in events] == ["SPEAK", "SILENT"]
    assert playout.dropped_samples == (3200 - 320) + (16000 - 640)

    # PLAY_IMMEDIATE: what was queued is dropped, the new audio plays at once
    playout.enqueue(np.full(3200, 1000, np.int16).tobytes())
    take(1)
    playout.play_immediate(np.full(320, 2000, np.int16).tobytes())
    assert np.all(take(1) == 2000)

    # an odd byte waits for the next message
    playout.clear()
    playout.enqueue(b"\x01")
    playout.enqueue(b"\x00\x02\x00")
    assert list(take(1)[:2]) == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# Sessions over WebRTC with the real client
# ---------------------------------------------------------------------------------------------------------------
@requires_netns
async def test_speech_plays_back_with_lips_that_follow_it(fake: FakeSimli,
                                                          make_client: Callable[..., SimliClient]) -> None:
    config = SimliConfig(faceId=FACE)
    client = make_client(config)
    session = await start_session(fake, client)
    assert session.config == json.loads(json.dumps(config.toRequest()))
    await session.wait_for(lambda s: s.skips == 1)  # start() sends SKIP once START arrived
    events = Events(client)
    media = Media(client, "rgb24")
    await media.wait_frames(10, 10)
    idle_openings = [opening for _, opening in media.video]
    idle_levels = [level for _, level in media.audio]

    voice = speech(2.5)
    await client.send(voice.tobytes())
    await events.wait_count("SILENT", 1)
    speak_at, silent_at = events.time_of("SPEAK"), events.time_of("SILENT")
    assert events.names == ["SPEAK", "SILENT"]
    await media.wait_for(lambda: sum(t > silent_at for t, _ in media.video) >= 15)

    assert max(idle_openings) < CLOSED_MOUTH and max(idle_levels) == 0.0
    assert max(o for t, o in media.video if speak_at <= t <= silent_at) > OPEN_MOUTH
    assert max(level for t, level in media.audio if speak_at <= t <= silent_at) > OPEN_MOUTH
    offset, correlation = av_offset(media.video, media.audio)  # the mouth moves with the voice heard
    assert correlation > 0.8, (offset, correlation)
    assert bytes(session.received_pcm) == voice.tobytes()
    assert session.audio_messages == math.ceil(voice.nbytes / 6000)  # send() slices into 6000-byte messages
    assert (session.speaks, session.silents) == (1, 1)
    assert media.video_sizes == {(512, 512)}
    assert media.audio_formats == {("s16", "stereo", 48000, 960)}

    await client.stop()
    await media.ended()
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.stop_cause is StopCause.DONE and session.done_received
    assert client.error is None and client.stopReason is None


@requires_netns
async def test_skip_interrupts_and_play_immediate_replaces(fake: FakeSimli,
                                                           make_client: Callable[..., SimliClient]) -> None:
    client = make_client()
    session = await start_session(fake, client)
    events = Events(client)
    media = Media(client, "yuva420p")
    long_reply, short_reply = speech(10.0), speech(0.5, seed=2)

    await client.send(long_reply.tobytes())
    await events.wait_count("SPEAK", 1)
    await client.clearBuffer()
    await events.wait_count("SILENT", 1)
    silent_at = events.time_of("SILENT")
    await session.wait_for(lambda s: s.skips == 2)
    assert 0 < session.dropped_samples < long_reply.size
    assert session.played_samples < long_reply.size
    await media.wait_for(lambda: any(t > silent_at and o < CLOSED_MOUTH for t, o in media.video))

    await client.sendImmediate(short_reply.tobytes())
    await events.wait_count("SILENT", 2)
    assert events.names == ["SPEAK", "SILENT", "SPEAK", "SILENT"]
    assert session.immediates == 1
    assert bytes(session.received_pcm) == long_reply.tobytes() + short_reply.tobytes()
    await client.stop()
    await media.ended()


@requires_netns
async def test_an_error_mid_session_ends_the_media_and_sets_client_error(
        fake: FakeSimli, make_client: Callable[..., SimliClient]) -> None:
    client = make_client()
    session = await start_session(fake, client)
    media = Media(client)
    await media.wait_frames()

    await session.send_error("Worker crashed")
    await media.ended()

    assert isinstance(client.error, SimliSessionError) and client.error.message == "Worker crashed"
    assert client.stopReason == "Worker crashed"
    with pytest.raises(SimliSessionError):  # after the end, send() raises the ending error
        await client.send(bytes(320))
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.stop_cause is StopCause.ERROR and session.sent_texts[-1] == "ERROR: Worker crashed"


@requires_netns
@pytest.mark.parametrize(("reason", "field", "value"), [("IDLE", "maxIdleTime", 0.5),
                                                        ("MAX", "maxSessionLength", 1.0)])
async def test_the_session_caps_set_the_stop_reason(fake: FakeSimli, make_client: Callable[..., SimliClient],
                                                    reason: str, field: str, value: float) -> None:
    config = SimliConfig(faceId=FACE, **{field: value})
    client = make_client(config)
    session = await start_session(fake, client)
    media = Media(client)

    await media.ended()

    assert client.stopReason == reason and client.error is None
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.config[field] == value
    assert session.stop_cause is StopCause(reason)
    assert session.sent_texts[-2:] == [f"CLOSING REASON: {reason}", "STOP"]


@requires_netns
async def test_a_killed_peer_connection_ends_the_frames_but_not_the_websocket(
        fake: FakeSimli, make_client: Callable[..., SimliClient]) -> None:
    client = make_client()
    session = await start_session(fake, client)
    media = Media(client)
    await media.wait_frames()

    await session.kill_webrtc()
    await media.ended()  # RTCP BYE ends the client's remote tracks

    assert client.error is None and client.stopReason is None  # nothing tells the client
    assert session.ws_open and not session.pc_open and fake.open_sessions == 1
    await client.send(bytes(6000))  # the websocket still works
    await session.wait_for(lambda s: s.audio_messages == 1)
    await client.stop()
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.stop_cause is StopCause.KILLED and session.done_received


@requires_netns
@pytest.mark.parametrize("close_code", [None, 1011])
async def test_an_abrupt_websocket_close_is_a_connection_error(fake: FakeSimli,
                                                               make_client: Callable[..., SimliClient],
                                                               close_code: int | None) -> None:
    client = make_client()
    session = await start_session(fake, client)
    media = Media(client)
    await media.wait_frames()

    await session.abort_websocket(close_code)
    await media.ended()

    assert isinstance(client.error, SimliConnectionError)
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.stop_cause is StopCause.ABORTED and not session.done_received


@requires_netns
@pytest.mark.parametrize(("reply", "message"), [("RATE LIMIT", "RATE LIMIT"),
                                                ("ERROR: Too many sessions", "Too many sessions")])
async def test_a_refused_start_is_a_session_error(fake: FakeSimli, make_client: Callable[..., SimliClient],
                                                  reply: str, message: str) -> None:
    fake.start_reply = reply

    with pytest.raises(SimliSessionError) as info:
        await make_client().start()

    assert info.value.message == message and info.value.code is SimliExceptions.UNKNOWN_ERROR
    await fake.wait_open_sessions(0, TIMEOUT)
    session = fake.sessions[0]
    assert session.stop_cause is StopCause.ERROR and session.error_message == reply
    assert not session.started.is_set()


@requires_netns
async def test_stop_while_starting(fake: FakeSimli, make_client: Callable[..., SimliClient]) -> None:
    fake.start_delay = 3600.0
    client = make_client()
    starting = asyncio.create_task(client.start())
    session = await fake.wait_session(0, TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        await session.media_connected.wait()  # the client applied the answer: it waits for START

    await client.stop()

    with pytest.raises(SimliConnectionError):
        await starting
    await fake.wait_open_sessions(0, TIMEOUT)
    assert session.stop_cause is StopCause.DONE and not session.started.is_set()


@requires_netns
async def test_streaming_size_from_the_token_body(fake: FakeSimli, make_client: Callable[..., SimliClient]) -> None:
    client = make_client(SimliConfig(faceId=FACE, streaming_width=1024, streaming_height=576))
    session = await start_session(fake, client)
    media = Media(client)
    await media.wait_frames(3, 1)

    assert (session.params.width, session.params.height) == (1024, 576)
    assert media.video_sizes == {(1024, 576)}
    assert max(opening for _, opening in media.video) < CLOSED_MOUTH
    await client.stop()
    await media.ended()


@requires_netns
async def test_closing_the_server_ends_its_sessions() -> None:
    server = FakeSimli(loopback_host(), 0, api_keys={API_KEY})
    await server.start()
    client: Any = None
    try:
        client = SimliClient(API_KEY, SimliConfig(faceId=FACE), simliURL=server.url, retry_count=1,
                             transport_mode=TransportMode.P2P)
        session = await start_session(server, client)
        media = Media(client)
        await media.wait_frames()
    finally:
        await server.close()

    await media.ended()
    assert session.stop_cause is StopCause.SERVER_CLOSED and server.open_sessions == 0
    assert client.error is None  # a 1001 close is a clean one for the client
    await client.stop()
    assert not _fake_tasks()
