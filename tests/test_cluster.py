"""`avatar-gateway serve --workers 2`, the real processes: one gateway to its callers whichever worker a connection
lands on.

A test reaches a chosen worker through its private socket (what the public port would give a connection the kernel
sent there): calls about a session another worker owns are forwarded with the caller's credentials, errors keep
their details, StreamAudio is relayed with exact playback accounting, ids stay unique across workers, request-id
retries find the first result, ListSessions shows every worker's sessions. Then the processes' life: a worker that
dies is started again and finds the others' sessions; SIGTERM stops every worker gracefully; a supervisor that
vanishes takes its workers with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from avatar.v1 import session_pb2

from agent_client import (
    AudioStream,
    AvatarGatewayClient,
    GatewayError,
    GoAway,
    PlaybackEvent,
    PlaybackFinished,
    PlaybackStarted,
    SessionEnded,
    StreamWarning,
)
from gateway.cluster import home
from gateway.config import GatewayConfig
from gateway.directory import session_key
from gateway.server import GatewayServer
from tests.cli_process import TIMEOUT, GatewayProcess, clean_env
from tests.cluster_process import WORKERS, Cluster, is_worker, start
from tests.conftest import chunks, speech

pytestmark = pytest.mark.asyncio(loop_scope="module")

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    running = await Cluster.start(tmp_path_factory.mktemp("cluster"))
    yield running
    await running.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def own_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster for a test that stops or breaks it."""
    running = await Cluster.start(tmp_path)
    yield running
    await running.aclose()


def ids_homed(worker: int, n: int) -> list[str]:
    """`n` fresh session ids whose directory entry lives in `worker`."""
    out: list[str] = []
    while len(out) < n:
        sid = f"c-{uuid.uuid4().hex[:12]}"
        if home(session_key(sid), WORKERS) == worker:
            out.append(sid)
    return out


async def playback(stream: AudioStream) -> list[PlaybackEvent]:
    """The stream's playback events (an underrun warning depends on timing: not part of what is checked)."""
    return [e async for e in stream if not isinstance(e, StreamWarning)]


async def failure(call: object) -> GatewayError:
    with pytest.raises(GatewayError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_every_session_call_reaches_the_owner_from_the_other_worker(cluster: Cluster) -> None:
    here, there = cluster.client(0), cluster.client(1)
    session = await start(here)
    assert (await there.get_session(session.name)).state == session_pb2.SESSION_STATE_ACTIVE

    watch = there.watch_session(session.name)
    assert (await anext(watch)).state == session_pb2.SESSION_STATE_ACTIVE
    async with there.stream_audio(session.name, sample_rate=16000) as stream:  # relayed to worker 0
        for piece in chunks(speech(0.5)):
            await stream.send(piece)
        await stream.end_segment()
    assert await playback(stream) == [PlaybackStarted(1), PlaybackFinished(1, 0.5, False)]

    ended = await there.end_session(session.name)
    assert ended.state == session_pb2.SESSION_STATE_ENDED
    states = [s.state async for s in watch]
    assert states[-1] == session_pb2.SESSION_STATE_ENDED
    assert (await here.get_session(session.name)).end_reason == session_pb2.END_REASON_CLIENT_REQUEST


async def test_errors_keep_their_code_and_details_across_workers(cluster: Cluster) -> None:
    session = await start(cluster.client(0))
    bob = cluster.client(1, key="key-b")
    hidden = await failure(bob.get_session(session.name))  # another caller's session: as if it did not exist
    assert hidden.code is grpc.StatusCode.NOT_FOUND and hidden.domain == "avatar.v1"
    assert hidden.metadata == {"session": session.name}

    with pytest.raises(GatewayError) as bad:
        async with cluster.client(1).stream_audio(session.name, sample_rate=1_000_000):
            pass
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.field_violations == ["config.format.sample_rate_hz"]

    missing = await failure(cluster.client(1).get_session("sessions/no-such-session"))
    assert missing.code is grpc.StatusCode.NOT_FOUND and missing.reason == "SESSION_NOT_FOUND"
    unauthenticated = await failure(cluster.client(1, key="wrong").get_session(session.name))
    assert unauthenticated.code is grpc.StatusCode.UNAUTHENTICATED
    await cluster.client(0).end_session(session.name)


@pytest.mark.parametrize("homed_at", [0, 1])
async def test_a_session_id_is_unique_across_workers(cluster: Cluster, homed_at: int) -> None:
    (sid,) = ids_homed(homed_at, 1)
    first = await start(cluster.client(0), session_id=sid)
    taken = await failure(start(cluster.client(1), session_id=sid))
    assert taken.code is grpc.StatusCode.ALREADY_EXISTS and taken.reason == "SESSION_EXISTS"
    await cluster.client(1).end_session(first.name)


@pytest.mark.parametrize("worker", [0, 1])
async def test_a_retry_on_another_worker_returns_the_first_result(cluster: Cluster, worker: int) -> None:
    request_id = str(uuid.uuid4())
    first = await start(cluster.client(worker), request_id=request_id, labels={"try": "one"})
    again = await start(cluster.client(1 - worker), request_id=request_id, labels={"try": "one"})
    assert again.name == first.name and again.create_time == first.create_time
    reused = await failure(start(cluster.client(1 - worker), request_id=request_id, labels={"try": "two"}))
    assert reused.code is grpc.StatusCode.ALREADY_EXISTS and reused.reason == "REQUEST_ID_REUSED"
    await cluster.client(worker).end_session(first.name)


@pytest.mark.parametrize("worker", [0, 1])
async def test_a_request_id_whose_start_failed_is_free_on_every_worker(cluster: Cluster, worker: int) -> None:
    request_id = str(uuid.uuid4())
    bad = await failure(start(cluster.client(worker), request_id=request_id, fps=99))
    assert bad.code is grpc.StatusCode.INVALID_ARGUMENT
    session = await start(cluster.client(1 - worker), request_id=request_id)
    assert session.state == session_pb2.SESSION_STATE_ACTIVE
    assert (await start(cluster.client(worker), request_id=request_id)).name == session.name
    await cluster.client(worker).end_session(session.name)


async def test_list_sessions_pages_through_every_workers_sessions(cluster: Cluster) -> None:
    mine = [await start(cluster.client(i % WORKERS)) for i in range(7)]
    names = {s.name for s in mine}
    for via in range(WORKERS):
        token, seen = "", []
        while True:
            page, token = await cluster.client(via).list_sessions_page(page_size=3, page_token=token)
            seen += [s.name for s in page if s.name in names]
            if not token:
                break
        assert seen == [s.name for s in reversed(mine)]  # newest first, each once
    for s in mine:
        await cluster.client(0).end_session(s.name)


async def test_connections_on_the_public_port_all_work(cluster: Cluster) -> None:
    clients = [cluster.client() for _ in range(8)]
    sessions = [await start(c) for c in clients]
    for client, session in zip(clients, sessions, strict=True):
        async with client.stream_audio(session.name, sample_rate=16000) as stream:
            await stream.send(speech(0.1).tobytes())
            await stream.end_segment()
        assert await playback(stream) == [PlaybackStarted(1), PlaybackFinished(1, 0.1, False)]
    other = cluster.client()
    for session in sessions:
        assert (await other.end_session(session.name)).state == session_pb2.SESSION_STATE_ENDED


async def test_a_worker_that_dies_is_started_again_and_finds_the_others_sessions(own_cluster: Cluster) -> None:
    # a session of worker 0 whose directory entry lives in worker 1, and one of worker 1's own
    (sid,) = ids_homed(1, 1)
    survivor = await start(own_cluster.client(0), session_id=sid)
    lost = await start(own_cluster.client(1))
    seen = len(own_cluster.process.lines)
    (victim,) = [pid for pid in own_cluster.worker_pids() if is_worker(pid, 1)]
    os.kill(victim, signal.SIGKILL)
    await own_cluster.process.wait_line(r"worker 1 exited unexpectedly", after=seen)
    await own_cluster.process.wait_line(r"\[worker 1\] gateway.server: gateway listening", after=seen)

    again = own_cluster.client(1)
    assert (await again.get_session(survivor.name)).state == session_pb2.SESSION_STATE_ACTIVE
    taken = await failure(start(again, session_id=sid))  # its id is still taken
    assert taken.code is grpc.StatusCode.ALREADY_EXISTS
    gone = await failure(own_cluster.client(0).get_session(lost.name))  # died with its worker
    assert gone.code is grpc.StatusCode.NOT_FOUND


async def test_sigterm_stops_every_worker_gracefully(own_cluster: Cluster) -> None:
    session = await start(own_cluster.client(0))
    watch = own_cluster.client(0).watch_session(session.name)
    assert (await anext(watch)).state == session_pb2.SESSION_STATE_ACTIVE
    stream = await own_cluster.client(1).stream_audio(session.name, sample_rate=16000).open()  # relayed
    for piece in chunks(speech(1.0)):
        await stream.send(piece)
    await stream.end_segment()
    events = stream.events()
    assert await anext(events) == PlaybackStarted(1)
    own_cluster.process.proc.send_signal(signal.SIGTERM)
    rest = [e async for e in events]
    assert [type(e) for e in rest] == [GoAway, PlaybackFinished, SessionEnded], rest
    assert rest[1] == PlaybackFinished(1, 1.0, False)  # buffered speech played out within the grace period
    assert isinstance(rest[2], SessionEnded) and rest[2].reason == session_pb2.END_REASON_SERVER_SHUTDOWN
    assert (await own_cluster.process.wait()) == 0
    assert "Traceback" not in own_cluster.process.output


async def test_a_worker_relaying_a_stream_says_go_away_when_it_stops_alone(own_cluster: Cluster) -> None:
    session = await start(own_cluster.client(0))
    stream = await own_cluster.client(1).stream_audio(session.name, sample_rate=16000).open()  # relayed
    for piece in chunks(speech(0.5)):
        await stream.send(piece)
    events = stream.events()
    assert await anext(events) == PlaybackStarted(1)
    (relaying,) = [pid for pid in own_cluster.worker_pids() if is_worker(pid, 1)]
    os.kill(relaying, signal.SIGTERM)
    async with asyncio.timeout(TIMEOUT):
        going = await anext(events)
    assert isinstance(going, GoAway) and going.time_left > 0
    await stream.end_segment()
    await stream.close()  # what a caller told go_away does: the rest plays out, the stream ends cleanly
    assert [e async for e in events if not isinstance(e, StreamWarning)] == [PlaybackFinished(1, 0.5, False)]
    assert (await own_cluster.client(0).get_session(session.name)).state == session_pb2.SESSION_STATE_ACTIVE


async def test_workers_stop_when_their_supervisor_vanishes(own_cluster: Cluster) -> None:
    watches = []
    for worker in range(WORKERS):
        session = await start(own_cluster.client(worker))
        watch = own_cluster.client(worker).watch_session(session.name)
        assert (await anext(watch)).state == session_pb2.SESSION_STATE_ACTIVE
        watches.append(watch)
    own_cluster.process.proc.kill()
    for watch in watches:
        async with asyncio.timeout(TIMEOUT):
            last = [s async for s in watch][-1]
        assert last.end_reason == session_pb2.END_REASON_SERVER_SHUTDOWN


async def test_a_port_another_gateway_serves_is_refused(tmp_path: Path) -> None:
    """gRPC lets a second server share a port by default: one gateway, one process or several, must not."""
    first = GatewayServer(GatewayConfig(listen="127.0.0.1:0", headless=True, shutdown_grace_s=0.0))
    port = await first.start()
    try:
        with pytest.raises(OSError, match="could not listen"):
            await GatewayServer(GatewayConfig(listen=f"127.0.0.1:{port}", headless=True)).start()
        for workers in ("1", "2"):
            process = await GatewayProcess.start("--headless", "--workers", workers, "--listen",
                                                 f"127.0.0.1:{port}", env=clean_env(TMPDIR=str(tmp_path)))
            try:
                assert await process.wait() == 1
            finally:
                await process.aclose()
            assert "cannot serve" in process.output and "Traceback" not in process.output
    finally:
        await first.stop(0.0)


async def test_sigusr1_makes_every_worker_log_its_metrics(cluster: Cluster) -> None:
    session = await start(cluster.client(0))
    seen = len(cluster.process.lines)
    cluster.process.proc.send_signal(signal.SIGUSR1)  # opens a window
    for worker in range(WORKERS):
        await cluster.process.wait_line(rf"\[worker {worker}\] gateway.metrics: metrics ", after=seen)
    pieces = chunks(speech(0.3))
    async with cluster.client(0).stream_audio(session.name, sample_rate=16000) as stream:
        for piece in pieces:
            await stream.send(piece)
        await stream.end_segment()
    await playback(stream)
    seen = len(cluster.process.lines)
    cluster.process.proc.send_signal(signal.SIGUSR1)
    figures = {}
    for worker in range(WORKERS):
        line = await cluster.process.wait_line(rf"\[worker {worker}\] gateway.metrics: metrics (.*)$", after=seen)
        figures[worker] = json.loads(line.group(1))
    assert figures[0]["chunks"] == len(pieces) and figures[0]["hop"]["count"] == len(pieces)
    assert figures[0]["arrival_lag"]["count"] == len(pieces)
    assert figures[1]["chunks"] == 0
    assert all(f["loop_lag"]["count"] > 0 for f in figures.values())
    await cluster.client(1).end_session(session.name)


def _connections_to(port: int) -> int:
    """ESTABLISHED TCP connections from this machine to 127.0.0.1:`port` (the client ends only; gRPC's sockets are
    IPv6 ones with IPv4-mapped addresses)."""
    targets = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[2] in targets:
                count += 1
    return count


async def test_a_client_with_several_connections_keeps_each_session_on_the_one_that_started_it(
        cluster: Cluster) -> None:
    before = _connections_to(cluster.port)
    async with AvatarGatewayClient(f"127.0.0.1:{cluster.port}", api_key="key-a", timeout=TIMEOUT,
                                   connections=4) as client:
        sessions = [await start(client) for _ in range(8)]
        assert [client.connection_of(s.name) for s in sessions] == [0, 1, 2, 3, 0, 1, 2, 3]
        assert _connections_to(cluster.port) - before == 4  # four connections of its own, not one shared
        pieces = chunks(speech(0.2))
        for session in sessions:
            async with client.stream_audio(session.name, sample_rate=16000) as stream:
                for piece in pieces:
                    await stream.send(piece)
                await stream.end_segment()
            assert [type(e) for e in await playback(stream)] == [PlaybackStarted, PlaybackFinished]
            assert (await client.get_session(session.name)).state == session_pb2.SESSION_STATE_ACTIVE
        for session in sessions:
            assert (await client.end_session(session.name)).state == session_pb2.SESSION_STATE_ENDED
        assert _connections_to(cluster.port) - before == 4  # every call used those four
    with pytest.raises(ValueError, match="connections must be 1 to 64"):
        AvatarGatewayClient("127.0.0.1:1", connections=0)
