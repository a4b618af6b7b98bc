"""Simli sessions of the real `avatar-gateway serve` process, configured the way a Simli customer configures it
(SIMLI_API_KEY, SIMLI_FACE_ID, SIMLI_URL): SIGTERM mid-utterance plays out, then stops the Simli session; a worker
process that is killed leaves no Simli session open (its sockets close with it, and Simli ends the session)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from agent_client import AvatarGatewayClient, GoAway, PlaybackFinished, PlaybackStarted, SessionEnded
from fakes.simli import FakeSimli
from tests.cli_process import GatewayProcess, clean_env
from tests.conftest import chunks, speech
from tests.simli.conftest import KEY, WAIT, simli_env

pytestmark = pytest.mark.timeout(120)
ROOM = {"room_name": "simli-room", "agent_identity": "agent-1"}


async def test_sigterm_mid_utterance_plays_out_then_stops_simli(fake_simli: FakeSimli) -> None:
    cli = await GatewayProcess.start("--headless", "--listen", "127.0.0.1:0", env=clean_env(**simli_env(fake_simli)))
    try:
        port = int((await cli.wait_line(r"listening on port (\d+)")).group(1))
        async with AvatarGatewayClient(f"127.0.0.1:{port}", timeout=WAIT) as client:
            session = await client.start_session("simli", **ROOM)  # type: ignore[arg-type]
            simli = await fake_simli.wait_session(0)
            events: list[object] = []
            async with client.stream_audio(session.name, sample_rate=16000) as stream:
                for chunk in chunks(speech(2.0)):
                    await stream.send(chunk)
                await stream.end_segment()
                async for event in stream:
                    events.append(event)
                    if isinstance(event, PlaybackStarted):
                        cli.proc.send_signal(signal.SIGTERM)
                    if isinstance(event, SessionEnded):
                        break
        assert [type(e) for e in events] == [PlaybackStarted, GoAway, PlaybackFinished, SessionEnded], events
        finished = events[2]
        assert isinstance(finished, PlaybackFinished) and not finished.interrupted
        assert finished.position == pytest.approx(2.0, abs=1e-6), "buffered speech played out within the grace"
        assert await cli.wait() == 0, cli.output
        await simli.wait_closed(WAIT)
        assert simli.stop_cause is not None and simli.stop_cause.name == "DONE"
        assert KEY not in cli.output, "the Simli API key appeared in the gateway's log"
        assert "Traceback" not in cli.output, cli.output
    finally:
        await cli.aclose()


async def test_a_killed_worker_leaves_no_simli_session_open(fake_simli: FakeSimli, tmp_path: Path) -> None:
    env = clean_env(TMPDIR=str(tmp_path), **simli_env(fake_simli))
    cli = await GatewayProcess.start("--headless", "--workers", "2", "--listen", "127.0.0.1:0", env=env)
    try:
        await cli.wait_line(r"listening on port (\d+) \(2 worker processes\)")
        run_dir = _run_dir(tmp_path)
        async with AvatarGatewayClient(f"unix:{run_dir}/worker-0.sock", timeout=WAIT) as client:
            await client.start_session("simli", **ROOM)  # type: ignore[arg-type]
        simli = await fake_simli.wait_session(0)
        assert simli.is_open
        seen = len(cli.lines)
        os.kill(_worker_pid(cli.proc.pid, 0), signal.SIGKILL)
        await simli.wait_closed(WAIT)
        assert simli.stop_cause is not None and simli.stop_cause.name in ("CLIENT_GONE", "ABORTED")
        await cli.wait_line(r"\[worker 0\] gateway.server: gateway listening", after=seen)
        await fake_simli.wait_open_sessions(0, timeout=WAIT)
    finally:
        if cli.proc.returncode is None:
            cli.proc.send_signal(signal.SIGTERM)
            await cli.wait()
        await cli.aclose()


def _run_dir(tmp: Path) -> Path:
    (run_dir,) = tmp.glob("avatar-gateway-*")
    return run_dir


def _worker_pid(supervisor: int, index: int) -> int:
    children = [int(p) for p in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    (pid,) = [c for c in children if f"--worker\x00{index}/" in Path(f"/proc/{c}/cmdline").read_text()]
    return pid
