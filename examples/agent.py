"""An example agent: starts an avatar session through the gateway, speaks a clip like a streaming TTS, interrupts
itself once (as a user barging in would make it), then says the rest.

    python -m examples.agent --gateway 127.0.0.1:50051 --room demo --agent-identity agent-1
"""

from __future__ import annotations

import argparse
import asyncio
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent_client import AudioStream, AvatarGatewayClient, PlaybackEvent, PlaybackFinished, PlaybackStarted

CLIP = Path(__file__).parent / "assets" / "speech.wav"


def load_clip(path: Path = CLIP) -> tuple[np.ndarray, int]:
    """A mono PCM16 WAV as (samples, sample rate)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono WAV")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy(), w.getframerate()


@dataclass
class Timeline:
    """When things happened, on time.monotonic()."""

    first_send: float = 0.0
    events: list[tuple[float, PlaybackEvent]] = field(default_factory=list)
    interrupt_sent: float = 0.0
    utterances: list[tuple[float, float]] = field(default_factory=list)  # (start s, end s) within the clip
    sent: list[np.ndarray] = field(default_factory=list)  # what the agent sent, segment by segment


async def speak(stream: AudioStream, pcm: np.ndarray, rate: int, *, speed: float = 2.0, end: bool = True) -> None:
    """Send audio in 20 ms chunks at `speed` x real time, as a streaming TTS would, then end the segment."""
    step = rate // 50
    start = time.monotonic()
    for k, i in enumerate(range(0, pcm.size, step)):
        await stream.send(pcm[i : i + step])
        delay = start + (k + 1) * 0.02 / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    if end:
        await stream.end_segment()


async def converse(client: AvatarGatewayClient, session: str, *, interrupt_after: float = 3.0,
                   split_at: float = 8.75, verbose: bool = True) -> Timeline:
    """Utterance 1 (interrupted `interrupt_after` s after it starts playing), then utterance 2 to the end."""
    pcm, rate = load_clip()
    cut = int(split_at * rate)
    timeline = Timeline(utterances=[(0.0, split_at), (split_at, pcm.size / rate)])
    started, finished = asyncio.Event(), asyncio.Event()

    async with client.stream_audio(session, sample_rate=rate) as stream:
        async def read() -> None:
            async for ev in stream:
                now = time.monotonic()
                timeline.events.append((now, ev))
                if verbose:
                    print(f"  agent: {now - timeline.first_send:6.2f}s  {ev}")
                if isinstance(ev, PlaybackStarted) and ev.segment_id == 1:
                    started.set()
                if isinstance(ev, PlaybackFinished) and ev.segment_id == 1:
                    finished.set()

        reader = asyncio.create_task(read())
        timeline.first_send = time.monotonic()
        timeline.sent.append(pcm[:cut])
        talker = asyncio.create_task(speak(stream, pcm[:cut], rate))
        await _until(started, reader)
        await asyncio.sleep(interrupt_after)  # the user talks over the avatar after this long
        await stream.clear()
        timeline.interrupt_sent = time.monotonic()
        if verbose:
            print(f"  agent: {timeline.interrupt_sent - timeline.first_send:6.2f}s  clear_buffer (user interrupts)")
        talker.cancel()  # the TTS stops mid-chunk: the stream stays usable
        await asyncio.gather(talker, return_exceptions=True)
        await _until(finished, reader)
        timeline.sent.append(pcm[cut:])
        await speak(stream, pcm[cut:], rate)
    await reader
    return timeline


async def _until(event: asyncio.Event, reader: asyncio.Task[None]) -> None:
    """Wait for `event`; if the event reader ends first (the stream failed), raise its error instead of hanging."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait((waiter, reader), return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        reader.result()
        raise RuntimeError("the audio stream ended before the expected playback event")


async def main(args: argparse.Namespace) -> None:
    async with AvatarGatewayClient(args.gateway, api_key=args.api_key) as client:
        session = await client.start_session(args.provider, room_name=args.room, agent_identity=args.agent_identity)
        print(f"session {session.name}: avatar {session.avatar_identity} is in room {args.room}")
        try:
            await converse(client, session.name, interrupt_after=args.interrupt_after)
        finally:
            await client.end_session(session.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="127.0.0.1:50051")
    parser.add_argument("--api-key")
    parser.add_argument("--provider", default="mock")
    parser.add_argument("--room", default="demo")
    parser.add_argument("--agent-identity", default="agent-1")
    parser.add_argument("--interrupt-after", type=float, default=3.0)
    asyncio.run(main(parser.parse_args()))
