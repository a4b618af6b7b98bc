"""A/V offset from what a viewer received: mouth opening read from the pixels against the audio envelope."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOOR_DBFS = -50.0
CEIL_DBFS = -10.0


def envelope_level(samples: np.ndarray) -> float:
    """0..1 loudness of int16 samples on the mock's mouth scale (RMS dBFS from -50 to -10, clamped)."""
    if samples.size == 0:
        return 0.0
    x = samples.astype(np.float32)
    mean_sq = float(np.dot(x, x)) / x.size
    if mean_sq <= 0:
        return 0.0
    dbfs = 10 * np.log10(mean_sq / 32768.0**2)  # 0 dBFS = a full-scale square wave, as the mock renders
    return float(np.clip((dbfs - FLOOR_DBFS) / (CEIL_DBFS - FLOOR_DBFS), 0.0, 1.0))


def _shown(times: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """What is on screen at each grid instant: a frame from its arrival until the next one's."""
    i = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, times.size - 1)
    out: np.ndarray = values[i]
    return out


def _heard(ends: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """What is heard at each grid instant: the chunk whose span (up to its end) contains it."""
    i = np.clip(np.searchsorted(ends, grid, side="left"), 0, ends.size - 1)
    out: np.ndarray = values[i]
    return out


def av_offset(video: Sequence[tuple[float, float]], audio: Sequence[tuple[float, float]], *,
              max_lag: float = 0.5, step: float = 0.005) -> tuple[float, float]:
    """(offset seconds, peak correlation). Positive offset: the video lags the audio.

    `video` is (arrival time, mouth opening) per frame, `audio` is (arrival time of a chunk's end, level) per
    audio chunk, both on one clock. Both are sampled on a common grid as a person meets them (a frame is on
    screen from its arrival until the next one arrives; a chunk is heard over the span that ends at its
    arrival), normalised, and cross-correlated over +-max_lag. Sampling points instead (a frame at its arrival,
    a chunk at its end) would read lips that are exactly in sync as half a frame plus half a chunk early.
    """
    if len(video) < 10 or len(audio) < 10:
        raise ValueError("not enough samples to measure A/V offset")
    t0 = max(video[0][0], audio[0][0]) + max_lag
    t1 = min(video[-1][0], audio[-1][0]) - max_lag
    if t1 - t0 < 1.0:
        raise ValueError("the recording is too short to measure A/V offset")
    vt, vv = (np.asarray(x, dtype=np.float64) for x in zip(*video, strict=True))
    at, av = (np.asarray(x, dtype=np.float64) for x in zip(*audio, strict=True))
    grid = np.arange(t0, t1, step)
    a = _heard(at, av, grid)
    a = (a - a.mean()) / (a.std() or 1.0)
    best, best_corr = 0.0, -2.0
    for k in range(-int(max_lag / step), int(max_lag / step) + 1):
        lag = k * step
        v = _shown(vt, vv, grid + lag)
        std = v.std()
        if std == 0:
            continue
        corr = float(np.dot(a, (v - v.mean()) / std) / v.size)
        if corr > best_corr:
            best, best_corr = lag, corr
    return best, best_corr
