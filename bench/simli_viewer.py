"""A viewer in a process of its own, for bench.simli_cost: joins a room, subscribes to one avatar
(viewer/participant.py: every frame decoded, the mouth opening read from its pixels, the audio envelope), and
answers questions about what it received in a window of time, one JSON line per command on stdin:

    {"cmd": "window", "t0": T0, "t1": T1}   -> A/V offset and correlation, frames, fps, dropped frames, largest gaps
    {"cmd": "trim", "before": T}            -> forgets what arrived before T (keeps a long run's memory bounded)

Times are time.monotonic() seconds, which is one clock for every process of the machine. End of stdin: it leaves the
room and exits. In a process of its own it can be stopped (SIGSTOP) for a while like a viewer that stalls, without
stopping the agents or the gateway, and its decoding is not charged to the benchmark's process.

    VIEWER_TOKEN=... python -m bench.simli_viewer --url ws://HOST:PORT --identity AVATAR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from typing import Any

from viewer.participant import Reception, Viewer
from viewer.sync import av_offset

FIRST_FRAME_TIMEOUT_S = 30.0
STILLS_CLEARED_EVERY_S = 2.0


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def _largest_gap_ms(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


def window(rx: Reception, t0: float, t1: float, fps: int) -> dict[str, Any]:
    """What arrived in [t0, t1)."""
    part = Reception(video=[v for v in rx.video if t0 <= v.t < t1], audio=[a for a in rx.audio if t0 <= a[0] < t1])
    out: dict[str, Any] = {
        "t0": t0, "t1": t1, "video_frames": len(part.video), "fps": len(part.video) / (t1 - t0),
        "dropped_frames": part.dropped_frames(fps), "audio_chunks": len(part.audio),
        "largest_video_gap_ms": round(_largest_gap_ms([v.t for v in part.video]), 1),
        "largest_audio_gap_ms": round(_largest_gap_ms([t for t, _ in part.audio]), 1),
        "size": f"{part.video[-1].width}x{part.video[-1].height}" if part.video else None,
        "mouth_max": round(max((v.opening for v in part.video), default=0.0), 3),
        "offset_ms": None, "correlation": None,
    }
    try:
        offset, corr = av_offset(part.lips(), part.audio)
    except ValueError as exc:
        out["offset_error"] = str(exc)
    else:
        out.update(offset_ms=round(offset * 1000, 1), correlation=round(corr, 3))
    return out


async def _clear_stills(rx: Reception) -> None:
    """The viewer keeps every 15th frame for a contact sheet: not wanted here (it would grow for ever)."""
    while True:
        rx.stills.clear()
        await asyncio.sleep(STILLS_CLEARED_EVERY_S)


async def main(args: argparse.Namespace) -> None:
    viewer = Viewer(args.url, os.environ["VIEWER_TOKEN"], avatar_identity=args.identity)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    cleaner = asyncio.create_task(_clear_stills(viewer.rx))
    try:
        await viewer.join()
        _emit({"event": "joined"})
        async with asyncio.timeout(FIRST_FRAME_TIMEOUT_S):
            await viewer.first_frame.wait()
        _emit({"event": "first_frame", "t": viewer.first_video_at, "now": time.monotonic()})
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "window":
                # in a thread: the loop goes on receiving meanwhile (the cross-correlation takes a while)
                _emit(await asyncio.to_thread(window, viewer.rx, float(cmd["t0"]), float(cmd["t1"]), args.fps))
            elif cmd["cmd"] == "trim":
                before = float(cmd["before"])
                viewer.rx.video = [v for v in viewer.rx.video if v.t >= before]
                viewer.rx.audio = [a for a in viewer.rx.audio if a[0] >= before]
                _emit({"event": "trimmed"})
    finally:
        cleaner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cleaner
        await viewer.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the LiveKit server (ws://...)")
    parser.add_argument("--identity", required=True, help="the avatar participant to watch")
    parser.add_argument("--fps", type=int, default=30, help="the avatar's frame rate (for dropped frames)")
    asyncio.run(main(parser.parse_args()))
