"""The plugin's audio stream told `go_away` while its session lives on.

A two-worker gateway: the session belongs to worker 0, the plugin's stream reaches it through worker 1 (relayed).
Worker 1 is stopped (SIGTERM; its supervisor starts it again) mid-utterance. The utterance is heard whole, the
stream is moved, not lost, and the next utterance plays on a new stream: every segment gets exactly one start and
one finish, none interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from avatar.v1 import session_pb2
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent, PlaybackStartedEvent

from agent_client import AudioStream
from agent_client.livekit import GatewayAudioOutput
from tests.cli_process import TIMEOUT
from tests.cluster_process import Cluster, is_worker, start

RATE = 16000
FRAME_MS = 20


def frames(seconds: float) -> list[rtc.AudioFrame]:
    """`seconds` of a tone in 20 ms frames."""
    n = RATE * FRAME_MS // 1000
    t = np.arange(round(seconds * RATE)) / RATE
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2")
    return [rtc.AudioFrame(data=pcm[i:i + n].tobytes(), sample_rate=RATE, num_channels=1, samples_per_channel=n)
            for i in range(0, len(pcm), n)]


async def say(out: GatewayAudioOutput, seconds: float) -> PlaybackFinishedEvent:
    for frame in frames(seconds):
        await out.capture_frame(frame)
    out.flush()
    async with asyncio.timeout(TIMEOUT):
        return await out.wait_for_playout()


async def speak_during(out: GatewayAudioOutput, seconds: float, stop: asyncio.Event) -> PlaybackFinishedEvent:
    """Say `seconds`, setting `stop` half-way through."""
    half = frames(seconds)
    for i, frame in enumerate(half):
        if i == len(half) // 2:
            stop.set()
        await out.capture_frame(frame)
    out.flush()
    async with asyncio.timeout(TIMEOUT):
        return await out.wait_for_playout()


async def _ready() -> None:
    return None  # headless: no video track to wait for


async def test_a_stream_told_go_away_moves_and_the_session_lives_on(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent_client.livekit.audio_output")
    cluster = await Cluster.start(tmp_path)
    out: GatewayAudioOutput | None = None
    try:
        owner = cluster.client(0)
        session = await start(owner)
        relay = cluster.client(1)

        async def open_stream(rate: int, channels: int) -> AudioStream:
            return await relay.stream_audio(session.name, sample_rate=rate, channels=channels).open()

        out = GatewayAudioOutput(open_stream=open_stream, ready=_ready)
        started: list[PlaybackStartedEvent] = []
        out.on("playback_started", started.append)
        (relaying,) = [pid for pid in cluster.worker_pids() if is_worker(pid, 1)]
        seen = len(cluster.process.lines)

        half_way = asyncio.Event()
        speaking = asyncio.ensure_future(speak_during(out, 2.0, half_way))
        await half_way.wait()
        os.kill(relaying, signal.SIGTERM)
        first = await speaking
        assert (first.playback_position, first.interrupted) == (2.0, False)  # heard whole through the old stream

        await cluster.process.wait_line(r"worker 1 exited unexpectedly", after=seen)
        await cluster.process.wait_line(r"\[worker 1\] gateway.server: gateway listening", after=seen)
        second = await say(out, 0.5)
        assert (second.playback_position, second.interrupted) == (0.5, False)
        assert out.reopened == 1
        assert len(started) == 2
        messages = [r.getMessage() for r in caplog.records]
        assert any("moving the stream" in m for m in messages), messages
        assert not any("stream lost" in m for m in messages), messages  # moved before its worker went
        assert (await owner.get_session(session.name)).state == session_pb2.SESSION_STATE_ACTIVE  # it lived on
        await owner.end_session(session.name)
    finally:
        if out is not None:
            await out.aclose()
        await cluster.aclose()
