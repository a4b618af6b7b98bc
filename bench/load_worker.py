"""One load-generator process for bench.gateway_load: N sessions, N real-time audio streams.

Protocol on stdio: prints `ready` once its sessions and streams are open, reads `go <epoch seconds>` from stdin,
streams until `go + seconds`, then prints one JSON line with what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

from agent_client import AudioStream, AvatarGatewayClient, PlaybackFinished
from bench.ticks import Ticker

RATE = 16000
CHUNK = RATE // 50  # 20 ms


async def _drain(stream: AudioStream, counts: dict[str, int]) -> None:
    async for ev in stream:
        if isinstance(ev, PlaybackFinished):
            counts["finished"] += 1


async def main(port: int, streams: int, seconds: float, video: tuple[int, int, int], tag: str) -> None:
    # one connection per 50 streams, as an agent fleet would spread its sessions
    clients = [AvatarGatewayClient(f"127.0.0.1:{port}", timeout=120) for _ in range(max(1, streams // 50))]
    opened: list[AudioStream] = []
    for i in range(streams):
        client = clients[i % len(clients)]
        session = await client.start_session("mock", room_name="bench", agent_identity=f"agent-{tag}-{i}",
                                             width=video[0], height=video[1], fps=video[2])
        opened.append(await client.stream_audio(session.name, sample_rate=RATE).open())
    counts = {"finished": 0}
    readers = [asyncio.create_task(_drain(s, counts)) for s in opened]
    t = np.arange(RATE * 2) / RATE
    segment = (np.sin(2 * np.pi * 150 * t) * (0.5 - 0.5 * np.cos(2 * np.pi * 4 * t)) * 8000).astype("<i2")
    pieces = [segment[i : i + CHUNK].tobytes() for i in range(0, segment.size, CHUNK)]
    ticker = Ticker(int(seconds * 50))
    sent = 0
    start = time.monotonic()
    async for tick in ticker.run():
        if tick == 0:
            start = time.monotonic()
        piece = pieces[tick % len(pieces)]
        await asyncio.gather(*(s.send(piece) for s in opened))
        sent += len(opened)
        if tick % len(pieces) == len(pieces) - 1:
            await asyncio.gather(*(s.end_segment() for s in opened))
    elapsed = time.monotonic() - start
    for s in opened:
        s.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for c in clients:
        await c.close()
    print(json.dumps({"sent": sent, "late_ticks": ticker.late, "ticks": ticker.ticks, "elapsed": elapsed,
                      "finished": counts["finished"]}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--video", default="64x48@10")
    parser.add_argument("--tag", default="0")
    a = parser.parse_args()
    size, fps = a.video.split("@")
    w, h = size.split("x")
    asyncio.run(main(a.port, a.streams, a.seconds, (int(w), int(h), int(fps)), a.tag))
