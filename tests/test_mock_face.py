"""Tests for the mock provider's procedural face (providers/mock/face.py)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc

from providers.mock.face import (
    BlinkSchedule,
    FaceRenderer,
    i420_size,
    mouth_opening,
    mouth_opening_i420,
    mouth_opening_rgb,
    rgb_to_i420,
)

W, H = 640, 480


@pytest.fixture(scope="module")
def renderer() -> FaceRenderer:
    return FaceRenderer(W, H)


def _i420_array(buf: bytes, w: int, h: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(buf, dtype=np.uint8).reshape(h * 3 // 2, w)


def _vp8_round_trip(frames: list[bytes], w: int, h: int, bit_rate: int) -> list[av.VideoFrame]:
    """Encode I420 frames with libvpx (VP8, realtime settings like a WebRTC sender) and decode them."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width = w
    enc.height = h
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.framerate = Fraction(30)
    enc.bit_rate = bit_rate
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    dec = av.CodecContext.create("vp8", "r")
    out: list[av.VideoFrame] = []
    for i, buf in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(_i420_array(buf, w, h), format="yuv420p")
        vf.pts = i
        for pkt in enc.encode(vf):
            out.extend(dec.decode(pkt))
    for pkt in enc.encode(None):
        out.extend(dec.decode(pkt))
    return out


def _level_sequence(levels: int) -> list[int]:
    """A sweep up, a sweep down, then abrupt random jumps (the hard case for a realtime encoder)."""
    rng = np.random.default_rng(1234)
    sweep = list(range(levels))
    return sweep + sweep[::-1] + [int(x) for x in rng.integers(0, levels, 3 * levels)]


def _assert_tracks(measured: npt.NDArray[np.float64], expected: npt.NDArray[np.float64],
                   seq: list[int], tol: float) -> None:
    assert float(np.corrcoef(measured, expected)[0, 1]) > 0.95
    assert float(np.max(np.abs(measured - expected))) < tol
    # Per level (averaged over its occurrences) the reading is monotonic in level, within tolerance.
    levels = sorted(set(seq))
    arr = np.asarray(seq)
    means = np.array([measured[arr == lv].mean() for lv in levels])
    assert np.all(np.diff(means) > -tol)
    assert means[0] < 0.05
    assert means[-1] > 0.9


# --------------------------------------------------------------------------------------------- rendering
def test_frame_size_and_identity(renderer: FaceRenderer) -> None:
    for lv in (0, 7, renderer.levels - 1):
        for closed in (False, True):
            a = renderer.frame(lv, closed)
            assert isinstance(a, bytes)
            assert len(a) == W * H * 3 // 2 == renderer.frame_size == i420_size(W, H)
            assert renderer.frame(lv, closed) is a
    # Out-of-range levels are clamped, not errors.
    assert renderer.frame(-3, False) is renderer.frame(0, False)
    assert renderer.frame(999, True) is renderer.frame(renderer.levels - 1, True)


def test_video_frame_wraps_without_copy(renderer: FaceRenderer) -> None:
    buf = renderer.frame(10, False)
    vf = rtc.VideoFrame(W, H, rtc.VideoBufferType.I420, buf)
    assert vf.data.obj is buf
    assert vf.data.nbytes == len(buf)


@pytest.mark.parametrize(("w", "h"), [(64, 48), (1280, 720)])
def test_other_sizes(w: int, h: int) -> None:
    r = FaceRenderer(w, h, levels=8)
    frames = [r.frame(lv, False) for lv in range(8)]
    assert all(len(f) == w * h * 3 // 2 for f in frames)
    assert all(r.frame(lv, False) is frames[lv] for lv in range(8))
    assert len(set(frames)) == 8
    readings = [mouth_opening(f, w, h) for f in frames]
    assert readings[0] == pytest.approx(0.0, abs=0.02)
    assert readings[-1] == pytest.approx(1.0, abs=0.02)
    assert all(b > a for a, b in itertools.pairwise(readings))


def test_invalid_sizes_rejected() -> None:
    for w, h in ((641, 480), (8, 8), (3840, 2160), (640, 1082)):
        with pytest.raises(ValueError):
            FaceRenderer(w, h)
    with pytest.raises(ValueError):
        FaceRenderer(64, 48, levels=1)


def test_each_level_distinct_and_only_mouth_changes(renderer: FaceRenderer) -> None:
    frames = [renderer.frame(lv, False) for lv in range(renderer.levels)]
    assert len(set(frames)) == renderer.levels
    y0 = _i420_array(frames[0], W, H)[:H].astype(np.int16)
    y1 = _i420_array(frames[-1], W, H)[:H].astype(np.int16)
    ys, xs = np.nonzero(y0 != y1)
    # The change is confined to the lower-middle of the face (the mouth), not the eyes or the background.
    assert ys.min() > H * 0.55 and ys.max() < H * 0.82
    assert xs.min() > W * 0.3 and xs.max() < W * 0.7
    # The open mouth is dark on a bright face.
    assert y1[int(H * 0.69), W // 2] < 80
    assert y0[int(H * 0.62), W // 2] > 170


def test_blink_changes_only_eyes(renderer: FaceRenderer) -> None:
    o = _i420_array(renderer.frame(5, False), W, H)[:H]
    c = _i420_array(renderer.frame(5, True), W, H)[:H]
    ys, _ = np.nonzero(o != c)
    assert ys.size > 0
    assert ys.max() < H * 0.55  # eyes are above the mouth box
    assert mouth_opening(renderer.frame(5, True), W, H) == mouth_opening(renderer.frame(5, False), W, H)


def test_clean_opening_monotonic(renderer: FaceRenderer) -> None:
    readings = [mouth_opening(renderer.frame(lv, False), W, H) for lv in range(renderer.levels)]
    assert readings[0] == pytest.approx(0.0, abs=1e-9)
    assert readings[-1] == pytest.approx(1.0, abs=1e-9)
    assert all(b > a for a, b in itertools.pairwise(readings))
    for lv, val in enumerate(readings):
        assert renderer.expected_opening(lv) == val
        assert val == pytest.approx(lv / (renderer.levels - 1), abs=0.02)


def test_rgb_and_i420_readings_agree(renderer: FaceRenderer) -> None:
    for lv in (0, 9, 20, renderer.levels - 1):
        buf = renderer.frame(lv, False)
        rgb = av.VideoFrame.from_ndarray(_i420_array(buf, W, H), format="yuv420p").to_ndarray(format="rgb24")
        assert mouth_opening(rgb, W, H) == pytest.approx(renderer.expected_opening(lv), abs=0.02)
        assert mouth_opening_rgb(rgb) == mouth_opening(rgb, W, H)
        assert mouth_opening_i420(np.frombuffer(buf, np.uint8), W, H) == renderer.expected_opening(lv)


def test_rgb_to_i420_known_colours() -> None:
    img = np.zeros((2, 4, 3), dtype=np.uint8)
    img[:, 2:] = 255
    out = rgb_to_i420(img)
    assert out.size == 12
    assert list(out[:8]) == [16, 16, 235, 235, 16, 16, 235, 235]
    assert list(out[8:]) == [128, 128, 128, 128]


# ------------------------------------------------------------------------------------------ VP8 round trip
def test_vp8_round_trip_tracks_level(renderer: FaceRenderer) -> None:
    seq = _level_sequence(renderer.levels)
    frames = [renderer.frame(lv, i % 37 < 4) for i, lv in enumerate(seq)]
    decoded = _vp8_round_trip(frames, W, H, bit_rate=300_000)
    assert len(decoded) == len(seq)
    expected = np.array([renderer.expected_opening(lv) for lv in seq])

    full = np.array([mouth_opening(f.to_ndarray(format="yuv420p"), f.width, f.height) for f in decoded])
    _assert_tracks(full, expected, seq, tol=0.06)

    small = [f.reformat(width=320, height=240) for f in decoded]
    via_i420 = np.array([mouth_opening(f.to_ndarray(format="yuv420p"), 320, 240) for f in small])
    via_rgb = np.array([mouth_opening(f.to_ndarray(format="rgb24"), 320, 240) for f in small])
    _assert_tracks(via_i420, expected, seq, tol=0.08)
    _assert_tracks(via_rgb, expected, seq, tol=0.08)


def test_vp8_low_bitrate_hd_downscaled() -> None:
    w, h = 1280, 720
    r = FaceRenderer(w, h, levels=16)
    seq = _level_sequence(r.levels)
    decoded = _vp8_round_trip([r.frame(lv, False) for lv in seq], w, h, bit_rate=150_000)
    assert len(decoded) == len(seq)
    expected = np.array([r.expected_opening(lv) for lv in seq])
    # A simulcast-like low layer with an odd width (aspect ratio kept).
    small = [f.reformat(width=427, height=240, format="rgb24") for f in decoded]
    measured = np.array([mouth_opening(f.to_ndarray(), f.width, f.height) for f in small])
    _assert_tracks(measured, expected, seq, tol=0.08)


# ------------------------------------------------------------------------------------------------ level_for
def _sine(amplitude: float, n: int = 533, sr: int = 16000, hz: float = 220.0) -> npt.NDArray[np.int16]:
    t = np.arange(n) / sr
    return np.rint(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_level_for_silence_and_full_scale(renderer: FaceRenderer) -> None:
    top = renderer.levels - 1
    assert renderer.level_for(np.zeros(0, dtype=np.int16)) == 0
    assert renderer.level_for(np.zeros(533, dtype=np.int16)) == 0
    assert renderer.level_for(_sine(1.0)) == 0  # far below the -50 dBFS floor
    assert renderer.level_for(_sine(32767.0)) == top
    assert renderer.level_for(np.full(533, -32768, dtype=np.int16)) == top


def test_level_for_monotonic_in_amplitude(renderer: FaceRenderer) -> None:
    amps = np.geomspace(1.0, 32767.0, 200)
    levels = [renderer.level_for(_sine(float(a))) for a in amps]
    assert all(b >= a for a, b in itertools.pairwise(levels))
    assert levels[0] == 0 and levels[-1] == renderer.levels - 1
    assert len(set(levels)) == renderer.levels  # every level is reachable


def test_level_for_linear_in_db(renderer: FaceRenderer) -> None:
    # RMS of a sine = A / sqrt(2); -30 dBFS RMS is halfway between -50 and -10 -> level ~15.5.
    a = 32768.0 * 10 ** (-30 / 20) * np.sqrt(2.0)
    assert renderer.level_for(_sine(a, n=16000)) in (15, 16)
    assert renderer.level_for(_sine(a, n=16000).reshape(-1, 1)) in (15, 16)  # (n, 1) is accepted too


# ------------------------------------------------------------------------------------------------- blinking
def _closed_runs(closed: list[bool]) -> list[tuple[int, int]]:
    """(start_frame, length) of each run of closed-eye frames."""
    runs: list[tuple[int, int]] = []
    start = -1
    for i, c in enumerate([*closed, False]):
        if c and start < 0:
            start = i
        elif not c and start >= 0:
            runs.append((start, i - start))
            start = -1
    return runs


@pytest.mark.parametrize("fps", [30.0, 25.0])
def test_blink_rate_over_a_minute(fps: float) -> None:
    sched = BlinkSchedule(seed=7)
    n = int(60 * fps)
    closed = [sched.eyes_closed(i, fps) for i in range(n)]
    runs = _closed_runs(closed)
    assert 60 / 5 - 1 <= len(runs) <= 60 / 3 + 1
    for _, length in runs:  # ~150 ms
        assert round(0.15 * fps) - 1 <= length <= round(0.15 * fps) + 1
    starts = [s for s, _ in runs]
    for a, b in itertools.pairwise(starts):
        assert 3 * fps - 1 <= b - a <= 5 * fps + 1


def test_blink_deterministic() -> None:
    a = [BlinkSchedule(seed=3).eyes_closed(i, 30.0) for i in range(3000)]
    b = BlinkSchedule(seed=3)
    # Same answers regardless of query order (stateless).
    assert [b.eyes_closed(i, 30.0) for i in reversed(range(3000))][::-1] == a
    assert [BlinkSchedule(seed=3).eyes_closed(i, 30.0) for i in range(3000)] == a
    assert [BlinkSchedule(seed=4).eyes_closed(i, 30.0) for i in range(3000)] != a
    assert any(a) and not all(a)
