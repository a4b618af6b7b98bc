"""Benchmark of the mock provider's face renderer (not a test).

Per frame it times what the mock provider does for every video frame: ``level_for`` on the PCM16 samples
the frame accompanies, ``BlinkSchedule.eyes_closed``, ``FaceRenderer.frame`` and wrapping the buffer into a
``livekit.rtc.VideoFrame``.  It also times the one-time precompute (``FaceRenderer(...)``).

    .venv/bin/python bench/render_mock.py [--width 640 --height 480 --frames 20000]

Prints a table (µs) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from livekit import rtc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from providers.mock.face import BlinkSchedule, FaceRenderer


def _stats(ns: npt.NDArray[np.int64]) -> dict[str, float]:
    us = ns.astype(np.float64) / 1000.0
    return {
        "mean_us": round(float(us.mean()), 2),
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "max_us": round(float(us.max()), 2),
        "n": int(us.size),
    }


def _audio_chunks(frames: int, samples_per_frame: int, sample_rate: int) -> list[npt.NDArray[np.int16]]:
    """Speech-like test audio: a 220 Hz tone whose loudness wanders from silence to near full scale."""
    rng = np.random.default_rng(0)
    t = np.arange(samples_per_frame) / sample_rate
    tone = np.sin(2 * np.pi * 220.0 * t)
    amps = 32767.0 * 10 ** (rng.uniform(-70.0, 0.0, frames) / 20.0)
    return [np.rint(a * tone).astype(np.int16) for a in amps]


def _time_each(n: int, fn: Callable[[int], object]) -> npt.NDArray[np.int64]:
    out = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--levels", type=int, default=32)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--precompute-runs", type=int, default=5)
    args = ap.parse_args()
    w, h, fps, n = args.width, args.height, args.fps, args.frames

    pre = np.empty(args.precompute_runs, dtype=np.int64)
    renderer = FaceRenderer(w, h, args.levels)
    for i in range(args.precompute_runs):
        t0 = time.perf_counter_ns()
        renderer = FaceRenderer(w, h, args.levels)
        pre[i] = time.perf_counter_ns() - t0

    spf = round(args.sample_rate / fps)
    chunks = _audio_chunks(n, spf, args.sample_rate)
    blink = BlinkSchedule(seed=1)
    i420 = rtc.VideoBufferType.I420

    def full(i: int) -> rtc.VideoFrame:
        level = renderer.level_for(chunks[i])
        buf = renderer.frame(level, blink.eyes_closed(i, fps))
        return rtc.VideoFrame(w, h, i420, buf)

    buf0 = renderer.frame(3, False)
    parts: dict[str, Callable[[int], object]] = {
        "per frame: level_for+blink+frame+VideoFrame": full,
        "  level_for": lambda i: renderer.level_for(chunks[i]),
        "  BlinkSchedule.eyes_closed": lambda i: blink.eyes_closed(i, fps),
        "  frame": lambda i: renderer.frame(i & 31, bool(i & 32)),
        "  rtc.VideoFrame wrap": lambda i: rtc.VideoFrame(w, h, i420, buf0),
    }
    for fn in parts.values():  # warm-up
        _time_each(min(n, 500), fn)
    results = {name.strip(): _stats(_time_each(n, fn)) for name, fn in parts.items()}
    pre_stats = _stats(pre)

    print(f"FaceRenderer {w}x{h}, {args.levels} levels x 2 eye states, {spf} samples/frame, {n} frames")
    print(f"{'':46} {'mean':>9} {'p50':>9} {'p99':>9} {'max':>9} {'n':>7}")
    for name, st in results.items():
        print(f"{name:46} {st['mean_us']:9.2f} {st['p50_us']:9.2f} {st['p99_us']:9.2f} {st['max_us']:9.2f} "
              f"{st['n']:7d}")
    print(f"{'precompute (one-time, µs)':46} {pre_stats['mean_us']:9.0f} {pre_stats['p50_us']:9.0f} "
          f"{pre_stats['p99_us']:9.0f} {pre_stats['max_us']:9.0f} {pre_stats['n']:7d}")
    mem_mb = 2 * args.levels * renderer.frame_size / 1e6
    print(f"precomputed frames: {2 * args.levels} x {renderer.frame_size} B = {mem_mb:.1f} MB")
    per_frame = results["per frame: level_for+blink+frame+VideoFrame"]
    print(json.dumps({
        "bench": "render_mock",
        "width": w,
        "height": h,
        "levels": args.levels,
        "samples_per_frame": spf,
        "frames": n,
        "per_frame_us": per_frame,
        "parts_us": {k: v for k, v in results.items() if not k.startswith("per frame")},
        "precompute_us": pre_stats,
        "precomputed_mb": round(mem_mb, 1),
        "target_met": per_frame["mean_us"] <= 1000.0,
    }))


if __name__ == "__main__":
    main()
