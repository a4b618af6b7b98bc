"""The benchmarks' HTTP/2 load client (bench/h2_client.py) against a real gateway: it must speak gRPC correctly for
the load figures to mean anything. A second, independent HTTP/2 client also exercises the gateway's wire side:
many streams on one connection, flow control, trailers and error statuses."""

from __future__ import annotations

import asyncio
import functools

import pytest
from avatar.v1 import audio_stream_pb2 as stream_pb
from avatar.v1 import avatar_provider_pb2 as api_pb
from avatar.v1 import session_pb2
from google.rpc import error_details_pb2, status_pb2

from bench.h2_client import GrpcCallError, H2Connection, grpc_message
from gateway.server import GatewayServer
from tests.conftest import chunks, speech

SERVICE = "/avatar.v1.AvatarProvider/"
WAIT = 20.0


def start_request(agent: str) -> bytes:
    return api_pb.StartSessionRequest(
        provider="mock", room=session_pb2.RoomTarget(room_name="r", agent_identity=agent),
        video=session_pb2.VideoFormat(width=64, height=48, fps=10), provider_options={"sample_rate": "16000"},
    ).SerializeToString()


def collect(into: list[stream_pb.StreamAudioResponse], data: bytes) -> None:
    into.append(stream_pb.StreamAudioResponse.FromString(data))


def request(**fields: object) -> bytes:
    return grpc_message(stream_pb.StreamAudioRequest(**fields).SerializeToString())  # type: ignore[arg-type]


async def test_streams_on_one_connection_play_and_finish_exactly_once(gateway: GatewayServer) -> None:
    conn = await H2Connection.connect("127.0.0.1", gateway.port)
    responses: dict[int, list[stream_pb.StreamAudioResponse]] = {}
    calls = []
    for i in range(8):
        session = api_pb.StartSessionResponse.FromString(
            await conn.unary(SERVICE + "StartSession", start_request(f"agent-{i}"))).session
        responses[i] = []
        call = conn.open(SERVICE + "StreamAudio", functools.partial(collect, responses[i]))
        conn.send(call, request(config=stream_pb.StreamAudioConfig(
            session=session.name, format=session_pb2.AudioFormat(sample_rate_hz=16000, channels=1))))
        calls.append(call)
    # per stream: 30 s of speech written at once and interrupted, then a 0.5 s segment played out. 8 x 30 s is
    # more than the gateway's 4 MiB connection window: the client must wait for its WINDOW_UPDATEs.
    long, short = chunks(speech(30.0)), chunks(speech(0.5, seed=2))
    for pcm in long:
        for call in calls:
            conn.send(call, request(audio=stream_pb.AudioChunk(pcm=pcm)))
    for call in calls:
        conn.send(call, request(clear_buffer=stream_pb.ClearBuffer()))
        for pcm in short:
            conn.send(call, request(audio=stream_pb.AudioChunk(pcm=pcm)))
        conn.send(call, request(segment_end=stream_pb.SegmentEnd()))
        conn.send(call, b"", end=True)  # half-close: buffered speech plays out, then the call ends OK
    conn.flush()
    assert conn.blocked_writes > 0
    async with asyncio.timeout(WAIT):
        statuses = await asyncio.gather(*(call.done for call in calls))
    conn.close()
    assert statuses == [0] * len(calls)
    for got in responses.values():
        assert got[0].WhichOneof("response") == "ready"
        finished = [r.playback_finished for r in got if r.WhichOneof("response") == "playback_finished"]
        assert [(f.segment_id, f.interrupted) for f in finished] == [(1, True), (2, False)]
        assert finished[1].playback_position.ToTimedelta().total_seconds() == pytest.approx(0.5, abs=1e-9)


async def test_error_status_and_details_reach_the_client(gateway: GatewayServer) -> None:
    conn = await H2Connection.connect("127.0.0.1", gateway.port)
    bad = api_pb.StartSessionRequest(provider="nope", room=session_pb2.RoomTarget(room_name="r", agent_identity="a"))
    with pytest.raises(GrpcCallError) as err:
        async with asyncio.timeout(WAIT):
            await conn.unary(SERVICE + "StartSession", bad.SerializeToString())
    conn.close()
    assert err.value.status == 3  # INVALID_ARGUMENT
    assert "unknown provider" in str(err.value)
    status = status_pb2.Status.FromString(err.value.details)
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert infos, "no ErrorInfo in grpc-status-details-bin"
