"""A speaker for load: the example clip in 20 ms chunks on a real-time schedule, segment after segment."""

from __future__ import annotations

import asyncio
import time

from agent_client import AudioStream
from examples.agent import load_clip


async def talk_until(stream: AudioStream, stop: asyncio.Event) -> None:
    """Speak until `stop` is set; each pass over the clip is one segment."""
    pcm, rate = load_clip()
    step = rate // 50
    start, k = time.monotonic(), 0
    while not stop.is_set():
        for i in range(0, pcm.size, step):
            if stop.is_set():
                break
            await stream.send(pcm[i : i + step])
            k += 1
            delay = start + k * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await stream.end_segment()
