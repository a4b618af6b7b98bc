"""One load-generator process for bench.gateway_load: N sessions, N real-time audio streams.

Each stream sends 16 kHz mono speech, one 20 ms chunk per tick, with a segment end every 2 s. Streams are spread
evenly over the tick (`PHASES` phases), as independent agents are; by default each stream has its own connection,
as agents in separate processes have (`--per-connection N`: an agent server hosting N sessions on one channel).
Two clients:

- `h2` (default): bench/h2_client.py, the gRPC wire protocol with almost no work per message, so that the figures
  describe the gateway and not the load generator;
- `agent_client`: the project's own typed client on grpc.aio, what a Python agent runs (~50-80 µs of its CPU per
  chunk sent, bench.grpc_floor).

Protocol on stdio: prints `ready` once its sessions and streams are open, reads `go <epoch seconds>` from stdin,
streams until `go + seconds`, then prints one JSON line with what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from avatar.v1 import audio_stream_pb2 as stream_pb
from avatar.v1 import avatar_provider_pb2 as api_pb
from avatar.v1 import session_pb2

from agent_client import AudioStream, AvatarGatewayClient, PlaybackFinished, StreamWarning
from bench.h2_client import H2Connection, H2Stream, grpc_message
from bench.ticks import PHASES, Ticker, by_phase

RATE = 16000
CHUNK = RATE // 50  # 20 ms
SERVICE = "/avatar.v1.AvatarProvider/"


@dataclass(frozen=True)
class Load:
    port: int
    streams: int
    seconds: float
    warmup: float  # the first seconds, before the measurement window
    video: tuple[int, int, int]
    provider_rate: int
    per_connection: int
    tag: str

    @property
    def connections(self) -> int:
        return -(-self.streams // self.per_connection)

    def start_request(self, i: int) -> api_pb.StartSessionRequest:
        w, h, fps = self.video
        return api_pb.StartSessionRequest(
            provider="mock", room=session_pb2.RoomTarget(room_name="bench", agent_identity=f"agent-{self.tag}-{i}"),
            video=session_pb2.VideoFormat(width=w, height=h, fps=fps),
            provider_options=self.provider_options)

    @property
    def provider_options(self) -> dict[str, str]:
        # a 10 fps frame needs 100 ms of audio before it can be shown: buffer 200 ms before a segment starts, so a
        # real-time speaker never underruns and every underrun warning means the gateway fell behind
        return {"sample_rate": str(self.provider_rate), "prebuffer_ms": "200"}


@dataclass
class Counts:
    sent: int = 0
    finished: int = 0
    underruns: int = 0  # PLAYOUT_UNDERRUN warnings in the measurement window: audio reached the provider late
    window_from: float = math.inf  # monotonic time the measurement window opens (after the warm-up)
    errors: int = 0
    blocked: int = 0  # messages that waited for the gateway's flow-control window

    def underrun(self) -> None:
        if time.monotonic() >= self.window_from:
            self.underruns += 1


def speech_chunks() -> list[bytes]:
    """2 s of a voiced tone with a syllable-rate envelope, as 20 ms PCM16 chunks."""
    t = np.arange(RATE * 2) / RATE
    segment = (np.sin(2 * np.pi * 150 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)) * 8000).astype("<i2")
    return [segment[i : i + CHUNK].tobytes() for i in range(0, segment.size, CHUNK)]


async def run_h2(load: Load, counts: Counts) -> Ticker:
    conns = [await H2Connection.connect("127.0.0.1", load.port) for _ in range(load.connections)]

    def on_response(data: bytes) -> None:
        response = stream_pb.StreamAudioResponse.FromString(data)
        kind = response.WhichOneof("response")
        if kind == "playback_finished":
            counts.finished += 1
        elif kind == "warning" and response.warning.reason == "PLAYOUT_UNDERRUN":
            counts.underrun()
        elif kind == "error":
            counts.errors += 1

    calls: list[tuple[H2Connection, H2Stream]] = []
    for i in range(load.streams):
        conn = conns[i // load.per_connection]
        session = api_pb.StartSessionResponse.FromString(
            await conn.unary(SERVICE + "StartSession", load.start_request(i).SerializeToString())).session
        stream = conn.open(SERVICE + "StreamAudio", on_response)
        conn.send(stream, grpc_message(stream_pb.StreamAudioRequest(config=stream_pb.StreamAudioConfig(
            session=session.name, format=session_pb2.AudioFormat(sample_rate_hz=RATE, channels=1)
        )).SerializeToString()))
        conn.flush()
        calls.append((conn, stream))
    pieces = [grpc_message(stream_pb.StreamAudioRequest(audio=stream_pb.AudioChunk(pcm=p)).SerializeToString())
              for p in speech_chunks()]
    end = grpc_message(stream_pb.StreamAudioRequest(segment_end=stream_pb.SegmentEnd()).SerializeToString())
    phases = by_phase(calls)

    async def tick(n: int, phase: int) -> None:
        piece = pieces[n % len(pieces)]
        last = n % len(pieces) == len(pieces) - 1
        group, used = phases[phase]
        for conn, stream in group:
            conn.send(stream, piece)
            if last:
                conn.send(stream, end)
        for conn in used:
            conn.flush()
        counts.sent += len(group)

    ticker = await _paced(load, counts, tick)
    for conn, stream in calls:
        conn.reset(stream)
    for conn in conns:
        conn.flush()
        conn.close()
    counts.blocked = sum(c.blocked_writes for c in conns)
    return ticker


async def run_agent_client(load: Load, counts: Counts) -> Ticker:
    w, h, fps = load.video
    clients = [AvatarGatewayClient(f"127.0.0.1:{load.port}", timeout=120) for _ in range(load.connections)]
    opened: list[AudioStream] = []
    for i in range(load.streams):
        client = clients[i // load.per_connection]
        session = await client.start_session("mock", room_name="bench", agent_identity=f"agent-{load.tag}-{i}",
                                             width=w, height=h, fps=fps,
                                             provider_options=load.provider_options)
        opened.append(await client.stream_audio(session.name, sample_rate=RATE).open())

    async def drain(stream: AudioStream) -> None:
        async for ev in stream:
            if isinstance(ev, PlaybackFinished):
                counts.finished += 1
            elif isinstance(ev, StreamWarning) and ev.reason == "PLAYOUT_UNDERRUN":
                counts.underrun()

    readers = [asyncio.create_task(drain(s)) for s in opened]
    pieces = speech_chunks()
    groups = [opened[p::PHASES] for p in range(PHASES)]

    async def tick(n: int, phase: int) -> None:
        piece = pieces[n % len(pieces)]
        await asyncio.gather(*(s.send(piece) for s in groups[phase]))
        if n % len(pieces) == len(pieces) - 1:
            await asyncio.gather(*(s.end_segment() for s in groups[phase]))
        counts.sent += len(groups[phase])

    ticker = await _paced(load, counts, tick)
    for s in opened:
        s.cancel()
    results = await asyncio.gather(*readers, return_exceptions=True)
    counts.errors += sum(1 for r in results if isinstance(r, Exception))
    for c in clients:
        await c.close()
    return ticker


async def _paced(load: Load, counts: Counts, tick: Callable[[int, int], Awaitable[None]]) -> Ticker:
    ticker = Ticker(int(load.seconds * 50), PHASES)
    opens = int(load.warmup * 50)
    async for n, phase in ticker.run():
        if n == opens and phase == 0:
            counts.window_from = time.monotonic()
            ticker.max_late_s = 0.0  # lateness counts in the measurement window only, like underruns
        await tick(n, phase)
    return ticker


async def main(load: Load, client: str) -> None:
    counts = Counts()
    start = time.monotonic()
    ticker = await (run_h2 if client == "h2" else run_agent_client)(load, counts)
    print(json.dumps({"sent": counts.sent, "late_ticks": ticker.late, "ticks": ticker.ticks * ticker.phases,
                      "max_late_ms": ticker.max_late_s * 1000,
                      "elapsed": time.monotonic() - start, "finished": counts.finished,
                      "underruns": counts.underruns, "errors": counts.errors, "blocked": counts.blocked}),
          flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--video", default="64x48@10")
    parser.add_argument("--provider-rate", type=int, default=RATE)
    parser.add_argument("--per-connection", type=int, default=1)
    parser.add_argument("--client", choices=("h2", "agent_client"), default="h2")
    parser.add_argument("--tag", default="0")
    a = parser.parse_args()
    size, fps = a.video.split("@")
    w, h = size.split("x")
    asyncio.run(main(Load(a.port, a.streams, a.seconds, a.warmup, (int(w), int(h), int(fps)), a.provider_rate,
                          a.per_connection, a.tag), a.client))
