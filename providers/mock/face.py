"""Deterministic procedural avatar face for the mock provider.

The mock provider publishes a cartoon face whose mouth opening follows the loudness of exactly the audio
that each video frame accompanies.  Because the mouth is the only dark object inside a fixed box of the
face, a LiveKit viewer can read the opening back from the received pixels (:func:`mouth_opening`), after
VP8 encode/decode and after scaling, and correlate it with the audio it hears to measure A/V sync.

Geometry
--------
All shapes are defined in *face units*: ``u = (x + 0.5 - w/2) / s`` and ``v = (y + 0.5 - h/2) / s`` with
``s = min(w, h)``, so the face is round at any aspect ratio and scales with the frame.  A receiver that
gets the frame at another resolution with the same aspect ratio (what LiveKit simulcast layers and
adaptive stream do) recomputes the same geometry from the received width/height.

Mouth measurement
-----------------
Inside the mouth box (``|u| <= 0.14``, ``0.09 <= v <= 0.29``) everything is bright skin (luma ~190)
except the mouth interior (luma ~55).  :func:`mouth_opening` counts the pixels darker than the midpoint
and normalises that count between the counts of a closed mouth and a fully open mouth rendered at the
received resolution, so a clean rendering of level ``L`` reads ``~= L / (levels - 1)`` (see
:meth:`FaceRenderer.expected_opening`): linear, because the mouth ellipse keeps its width and only its
height grows.

Everything here is vectorised numpy; :meth:`FaceRenderer.frame` is an O(1) lookup of a precomputed,
immutable ``bytes`` object (``livekit.rtc.VideoFrame`` wraps ``bytes`` without copying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DARK_THRESHOLD",
    "BlinkSchedule",
    "FaceRenderer",
    "i420_size",
    "mouth_opening",
    "mouth_opening_i420",
    "mouth_opening_rgb",
    "mouth_reference",
    "rgb_to_i420",
]

FloatArray = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]

# ---------------------------------------------------------------------------------------------------------
# Palette (RGB).  Lumas (BT.601 limited range) are noted: the mouth box only ever contains SKIN (~190,
# with a shading of a few levels) and MOUTH (~55); the detection threshold sits in the middle.
# ---------------------------------------------------------------------------------------------------------
_BG_TOP: Final = (178.0, 214.0, 232.0)
_BG_BOTTOM: Final = (120.0, 168.0, 200.0)
_SHIRT: Final = (70.0, 110.0, 160.0)
_HAIR: Final = (92.0, 58.0, 40.0)
_SKIN: Final = (246.0, 208.0, 178.0)  # Y ~ 201
_SKIN_SHADE: Final = (226.0, 182.0, 152.0)  # neck / nose shading
_BLUSH: Final = (250.0, 170.0, 165.0)
_EYE_WHITE: Final = (250.0, 250.0, 250.0)
_IRIS: Final = (60.0, 90.0, 120.0)
_PUPIL: Final = (20.0, 20.0, 28.0)
_BROW: Final = (80.0, 50.0, 36.0)
_LID: Final = (90.0, 55.0, 45.0)
_MOUTH: Final = (110.0, 30.0, 40.0)  # Y ~ 60

# ---------------------------------------------------------------------------------------------------------
# Geometry in face units (see module docstring).
# ---------------------------------------------------------------------------------------------------------
_HEAD_C: Final = (0.0, -0.02)
_HEAD_R: Final = (0.30, 0.38)
_MOUTH_C: Final = (0.0, 0.19)
_MOUTH_RX: Final = 0.11
_MOUTH_RY_CLOSED: Final = 0.005  # level 0: a thin line (~5 px thick at 480 p)
_MOUTH_RY_OPEN: Final = 0.085  # level max
# The measuring box: contains the whole mouth at any level with a margin, and only skin around it.
_BOX_U: Final = (-0.14, 0.14)
_BOX_V: Final = (0.09, 0.29)
_EYE_DX: Final = 0.11
_EYE_V: Final = -0.05

# BT.601 limited-range coefficients.
_KY: Final = (0.256788, 0.504129, 0.097906)
_KU: Final = (-0.148223, -0.290993, 0.439216)
_KV: Final = (0.439216, -0.367788, -0.071427)


def _luma(rgb: tuple[float, float, float]) -> float:
    return 16.0 + _KY[0] * rgb[0] + _KY[1] * rgb[1] + _KY[2] * rgb[2]


_SKIN_Y: Final = _luma(_SKIN)
_MOUTH_Y: Final = _luma(_MOUTH)
#: Luma below which a pixel of the mouth box counts as "mouth".
DARK_THRESHOLD: Final = 0.5 * (_SKIN_Y + _MOUTH_Y)


def i420_size(width: int, height: int) -> int:
    """Bytes of a tightly packed I420 image (chroma planes rounded up for odd sizes)."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return width * height + 2 * cw * ch


# ---------------------------------------------------------------------------------------------------------
# Vectorised drawing helpers
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Face-unit coordinates of the pixel centres of a (sub-)rectangle of a w x h frame."""

    u: FloatArray  # shape (1, nx)
    v: FloatArray  # shape (ny, 1)
    px: float  # pixels per face unit (s)

    @staticmethod
    def make(width: int, height: int, x0: int = 0, x1: int | None = None, y0: int = 0,
             y1: int | None = None) -> _Grid:
        s = float(min(width, height))
        x1 = width if x1 is None else x1
        y1 = height if y1 is None else y1
        xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - width / 2.0)) / np.float32(s)
        ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - height / 2.0)) / np.float32(s)
        return _Grid(u=xs[None, :], v=ys[:, None], px=s)


def _ellipse(g: _Grid, c: tuple[float, float], r: tuple[float, float]) -> FloatArray:
    """Anti-aliased coverage (0..1) of an ellipse, from a first-order signed-distance estimate.

    f = (du/rx)^2 + (dv/ry)^2 - 1 and sdf ~= f / |grad f|; this stays accurate for very flat ellipses,
    which is what a closed mouth or an eyelid is.
    """
    rx, ry = r
    du = g.u - np.float32(c[0])
    dv = g.v - np.float32(c[1])
    a = du / np.float32(rx * rx)
    b = dv / np.float32(ry * ry)
    f = du * a + dv * b - np.float32(1.0)
    grad = np.float32(2.0) * np.sqrt(a * a + b * b) + np.float32(1e-9)
    sdf_px = f / grad * np.float32(g.px)
    cov: FloatArray = np.clip(np.float32(0.5) - sdf_px, 0.0, 1.0).astype(np.float32, copy=False)
    return cov


def _soft_blob(g: _Grid, c: tuple[float, float], sigma: float) -> FloatArray:
    d2 = (g.u - np.float32(c[0])) ** 2 + (g.v - np.float32(c[1])) ** 2
    out: FloatArray = np.exp(-d2 / np.float32(2.0 * sigma * sigma)).astype(np.float32, copy=False)
    return out


def _paint(canvas: FloatArray, cov: FloatArray, color: tuple[float, float, float],
           alpha: float = 1.0) -> None:
    """canvas = lerp(canvas, color, cov * alpha), in place; cov broadcasts over (h, w)."""
    a = np.broadcast_to(cov if alpha == 1.0 else cov * np.float32(alpha), canvas.shape[:2])[..., None]
    col = np.asarray(color, dtype=np.float32)
    canvas += (col - canvas) * a


class _Painter:
    """Draws shapes on an (h, w, 3) float RGB canvas that is the window at (x_off, y_off) of a w x h frame.

    Every shape is evaluated only on the pixels of its bounding box (plus an anti-aliasing margin).
    """

    def __init__(self, canvas: FloatArray, width: int, height: int, x_off: int = 0, y_off: int = 0) -> None:
        self.canvas = canvas
        self.width = width
        self.height = height
        self.x_off = x_off
        self.y_off = y_off
        self.s = float(min(width, height))

    def window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[_Grid, FloatArray] | None:
        """Grid and canvas view of the face-unit rectangle [u0, u1] x [v0, v1] (+2 px), or None if empty."""
        ch, cw = self.canvas.shape[:2]
        m = 2.0
        x0 = max(math.floor(u0 * self.s + self.width / 2.0 - m) - self.x_off, 0)
        x1 = min(math.ceil(u1 * self.s + self.width / 2.0 + m) - self.x_off, cw)
        y0 = max(math.floor(v0 * self.s + self.height / 2.0 - m) - self.y_off, 0)
        y1 = min(math.ceil(v1 * self.s + self.height / 2.0 + m) - self.y_off, ch)
        if x0 >= x1 or y0 >= y1:
            return None
        g = _Grid.make(self.width, self.height, x0 + self.x_off, x1 + self.x_off, y0 + self.y_off,
                       y1 + self.y_off)
        return g, self.canvas[y0:y1, x0:x1]

    def ellipse(self, c: tuple[float, float], r: tuple[float, float], color: tuple[float, float, float],
                alpha: float = 1.0) -> None:
        w = self.window(c[0] - r[0], c[0] + r[0], c[1] - r[1], c[1] + r[1])
        if w is not None:
            _paint(w[1], _ellipse(w[0], c, r), color, alpha)

    def blob(self, c: tuple[float, float], sigma: float, color: tuple[float, float, float],
             alpha: float = 1.0) -> None:
        e = 3.5 * sigma
        w = self.window(c[0] - e, c[0] + e, c[1] - e, c[1] + e)
        if w is not None:
            _paint(w[1], _soft_blob(w[0], c, sigma), color, alpha)


def rgb_to_i420(rgb: npt.NDArray[np.floating] | U8Array) -> U8Array:
    """Convert an (h, w, 3) RGB image (even w, h) to a flat I420 array (BT.601 limited range)."""
    h, w, _ = rgb.shape
    if w % 2 or h % 2:
        raise ValueError("rgb_to_i420 needs even width and height")
    f = rgb.astype(np.float32, copy=False)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = np.float32(16.0) + np.float32(_KY[0]) * r + np.float32(_KY[1]) * g + np.float32(_KY[2]) * b
    # 2x2 box average of RGB, then convert (the transform is linear: same as averaging U/V).
    sub = (f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2]) * np.float32(0.25)
    sr, sg, sb = sub[..., 0], sub[..., 1], sub[..., 2]
    u = np.float32(128.0) + np.float32(_KU[0]) * sr + np.float32(_KU[1]) * sg + np.float32(_KU[2]) * sb
    v = np.float32(128.0) + np.float32(_KV[0]) * sr + np.float32(_KV[1]) * sg + np.float32(_KV[2]) * sb
    out = np.empty(w * h * 3 // 2, dtype=np.uint8)
    n, q = w * h, w * h // 4
    out[:n] = np.clip(np.rint(y), 0, 255).ravel()
    out[n:n + q] = np.clip(np.rint(u), 0, 255).ravel()
    out[n + q:] = np.clip(np.rint(v), 0, 255).ravel()
    return out


def _mouth_ry(level: int, levels: int) -> float:
    frac = level / (levels - 1) if levels > 1 else 0.0
    return _MOUTH_RY_CLOSED + (_MOUTH_RY_OPEN - _MOUTH_RY_CLOSED) * frac


def _box_pixels(width: int, height: int, even: bool) -> tuple[int, int, int, int]:
    """Pixel rectangle [x0, x1) x [y0, y1) covering the mouth box (expanded to even bounds if asked)."""
    s = float(min(width, height))
    x0 = math.floor(_BOX_U[0] * s + width / 2.0)
    x1 = math.ceil(_BOX_U[1] * s + width / 2.0)
    y0 = math.floor(_BOX_V[0] * s + height / 2.0)
    y1 = math.ceil(_BOX_V[1] * s + height / 2.0)
    if even:
        x0, y0 = x0 & ~1, y0 & ~1
        x1, y1 = x1 + (x1 & 1), y1 + (y1 & 1)
    return max(0, x0), min(width, x1), max(0, y0), min(height, y1)


# ---------------------------------------------------------------------------------------------------------
# The renderer
# ---------------------------------------------------------------------------------------------------------
class FaceRenderer:
    """Precomputed I420 frames of a cartoon face: ``levels`` mouth openings x {eyes open, eyes closed}."""

    def __init__(self, width: int = 640, height: int = 480, levels: int = 32, *,
                 floor_dbfs: float = -50.0, ceil_dbfs: float = -10.0) -> None:
        if width % 2 or height % 2 or not (16 <= width <= 1920 and 16 <= height <= 1080):
            raise ValueError(f"width/height must be even, 16..1920 x 16..1080 (got {width}x{height})")
        if levels < 2:
            raise ValueError("levels must be >= 2")
        if not ceil_dbfs > floor_dbfs:
            raise ValueError("ceil_dbfs must be above floor_dbfs")
        self.width: Final = width
        self.height: Final = height
        self.levels: Final = levels
        self.floor_dbfs: Final = float(floor_dbfs)
        self.ceil_dbfs: Final = float(ceil_dbfs)
        self.frame_size: Final = width * height * 3 // 2
        # level_for constants: level = (10*log10(mean_sq) - off) * scale, with mean_sq in int16 units^2.
        self._db_off = 20.0 * math.log10(32768.0) + self.floor_dbfs
        self._db_scale = (levels - 1) / (self.ceil_dbfs - self.floor_dbfs)
        self._mean_sq_floor = (32768.0 * 10.0 ** (self.floor_dbfs / 20.0)) ** 2
        self._top = levels - 1

        # frames[eyes_closed][level]; each entry its own bytes object (VideoFrame wraps bytes w/o copying).
        self._frames: tuple[tuple[bytes, ...], tuple[bytes, ...]] = self._render_all()
        self._expected = tuple(
            mouth_opening_i420(self._frames[0][lv], width, height) for lv in range(levels)
        )

    # -- rendering -----------------------------------------------------------------------------------------
    def _render_base(self) -> FloatArray:
        w, h = self.width, self.height
        canvas = np.empty((h, w, 3), dtype=np.float32)
        t = ((np.arange(h, dtype=np.float32) + np.float32(0.5)) / np.float32(h))[:, None, None]
        top = np.asarray(_BG_TOP, dtype=np.float32)
        bottom = np.asarray(_BG_BOTTOM, dtype=np.float32)
        canvas[:] = top + (bottom - top) * t
        p = _Painter(canvas, w, h)
        p.blob((0.0, -0.05), 0.30, (235.0, 245.0, 250.0), 0.35)  # soft halo behind the head
        # Shoulders and neck.
        p.ellipse((0.0, 0.78), (0.50, 0.32), _SHIRT)
        p.ellipse((0.0, 0.40), (0.10, 0.16), _SKIN_SHADE)
        # Hair behind the head, head, then the fringe (hair ellipse x fringe ellipse: no seam).
        hair_c, hair_r = (0.0, -0.07), (0.335, 0.38)
        fringe_c, fringe_r = (0.06, -0.43), (0.36, 0.19)
        p.ellipse(hair_c, hair_r, _HAIR)
        p.ellipse(_HEAD_C, _HEAD_R, _SKIN)
        win = p.window(-hair_r[0], hair_r[0], hair_c[1] - hair_r[1], fringe_c[1] + fringe_r[1])
        if win is not None:
            g, view = win
            _paint(view, _ellipse(g, hair_c, hair_r) * _ellipse(g, fringe_c, fringe_r), _HAIR)
        # Cheeks (blush) and nose: both stay well above the mouth threshold and out of the mouth box.
        for sx in (-1.0, 1.0):
            p.blob((sx * 0.19, 0.10), 0.035, _BLUSH, 0.55)
        p.ellipse((0.0, 0.055), (0.022, 0.016), _SKIN_SHADE, 0.9)
        # Eyebrows.
        for sx in (-1.0, 1.0):
            p.ellipse((sx * _EYE_DX, _EYE_V - 0.08), (0.055, 0.011), _BROW)
        return canvas

    def _paint_eyes(self, canvas: FloatArray, closed: bool) -> None:
        p = _Painter(canvas, self.width, self.height)
        for sx in (-1.0, 1.0):
            cx = sx * _EYE_DX
            if closed:
                # A closed lid: a thin dark arc (lower part of a flat elliptic ring).
                win = p.window(cx - 0.055, cx + 0.055, _EYE_V - 0.01, _EYE_V + 0.02)
                if win is not None:
                    g, view = win
                    outer = _ellipse(g, (cx, _EYE_V), (0.052, 0.018))
                    inner = _ellipse(g, (cx, _EYE_V - 0.006), (0.050, 0.016))
                    arc = np.clip(outer - inner, 0.0, 1.0) * (g.v >= np.float32(_EYE_V - 0.004))
                    _paint(view, arc.astype(np.float32), _LID)
            else:
                p.ellipse((cx, _EYE_V), (0.050, 0.034), _EYE_WHITE)
                p.ellipse((cx, _EYE_V + 0.002), (0.026, 0.026), _IRIS)
                p.ellipse((cx, _EYE_V + 0.002), (0.013, 0.013), _PUPIL)
                p.ellipse((cx + 0.008, _EYE_V - 0.008), (0.006, 0.006), _EYE_WHITE)

    def _render_all(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Render base + eyes once per eye state; per level, redraw and re-convert only the mouth box."""
        w, h = self.width, self.height
        base = self._render_base()
        x0, x1, y0, y1 = _box_pixels(w, h, even=True)
        bw, bh = x1 - x0, y1 - y0
        n, q = w * h, w * h // 4
        result: list[tuple[bytes, ...]] = []
        for closed in (False, True):
            canvas = base.copy() if not closed else base
            self._paint_eyes(canvas, closed)
            i420 = rgb_to_i420(canvas)
            y_box = i420[:n].reshape(h, w)[y0:y1, x0:x1]
            u_box = i420[n:n + q].reshape(h // 2, w // 2)[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
            v_box = i420[n + q:].reshape(h // 2, w // 2)[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
            box_rgb = canvas[y0:y1, x0:x1]
            frames: list[bytes] = []
            for lv in range(self.levels):
                patch = box_rgb.copy()
                mouth_r = (_MOUTH_RX, _mouth_ry(lv, self.levels))
                _Painter(patch, w, h, x0, y0).ellipse(_MOUTH_C, mouth_r, _MOUTH)
                pi = rgb_to_i420(patch)
                y_box[:] = pi[:bw * bh].reshape(bh, bw)
                u_box[:] = pi[bw * bh:bw * bh * 5 // 4].reshape(bh // 2, bw // 2)
                v_box[:] = pi[bw * bh * 5 // 4:].reshape(bh // 2, bw // 2)
                frames.append(i420.tobytes())
            result.append(tuple(frames))
        return result[0], result[1]

    # -- per-frame API -------------------------------------------------------------------------------------
    def frame(self, level: int, eyes_closed: bool) -> bytes:
        """The precomputed I420 image for ``level`` (clamped to 0..levels-1); O(1), never copies."""
        lv = 0 if level < 0 else (self._top if level > self._top else level)
        return self._frames[1 if eyes_closed else 0][lv]

    def level_for(self, samples: npt.NDArray[np.int16]) -> int:
        """Mouth level for the PCM16 samples one frame accompanies.

        RMS in dBFS (0 dBFS = a full-scale square wave) mapped linearly from ``floor_dbfs`` -> 0 to
        ``ceil_dbfs`` -> levels-1, rounded and clamped.  Empty or silent input -> 0.
        """
        n = samples.size
        if n == 0:
            return 0
        x = samples.reshape(-1).astype(np.float32)
        mean_sq = float(np.dot(x, x)) / n
        if mean_sq <= self._mean_sq_floor:
            return 0
        lv = round((10.0 * math.log10(mean_sq) - self._db_off) * self._db_scale)
        return self._top if lv > self._top else lv

    def expected_opening(self, level: int) -> float:
        """What :func:`mouth_opening` returns for the clean rendering of ``level`` (~= level/(levels-1))."""
        lv = 0 if level < 0 else (self._top if level > self._top else level)
        return self._expected[lv]


# ---------------------------------------------------------------------------------------------------------
# Blinking
# ---------------------------------------------------------------------------------------------------------
def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-distributed deterministic hash of a 64-bit integer."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class BlinkSchedule:
    """Deterministic, stateless blink timing: a ``duration_s`` blink every ``min_interval_s..max_interval_s``.

    Time is cut into slots of the mean interval; slot ``k`` holds exactly one blink whose start is jittered
    by a hash of ``(seed, k)`` within +-(max-min)/4 of the slot middle, so consecutive blinks are
    ``min_interval_s..max_interval_s`` apart.  ``eyes_closed`` is O(1) and independent of call order.
    """

    def __init__(self, seed: int = 0, *, min_interval_s: float = 3.0, max_interval_s: float = 5.0,
                 duration_s: float = 0.15) -> None:
        if not 0.0 < min_interval_s <= max_interval_s:
            raise ValueError("need 0 < min_interval_s <= max_interval_s")
        period = 0.5 * (min_interval_s + max_interval_s)
        jitter = 0.25 * (max_interval_s - min_interval_s)
        if not 0.0 < duration_s < period / 2.0 - jitter:
            raise ValueError("blink duration too long for the interval")
        self.seed: Final = seed
        self.duration_s: Final = duration_s
        self._period = period
        self._jitter = jitter
        self._salt = _mix64(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)

    def blink_start(self, slot: int) -> float:
        """Start time (s) of the blink in slot ``slot`` (slot k covers [k*period, (k+1)*period))."""
        r = _mix64(self._salt ^ (slot * 0xD1B54A32D192ED03)) / 18446744073709551616.0  # [0, 1)
        return (slot + 0.5) * self._period + (2.0 * r - 1.0) * self._jitter

    def eyes_closed_at(self, t: float) -> bool:
        """Whether the eyes are closed at time ``t`` seconds."""
        start = self.blink_start(math.floor(t / self._period))
        return start <= t < start + self.duration_s

    def eyes_closed(self, frame_index: int, fps: float) -> bool:
        """Whether the eyes are closed in frame ``frame_index`` of a ``fps`` stream (frame time = i / fps)."""
        return self.eyes_closed_at(frame_index / fps)


# ---------------------------------------------------------------------------------------------------------
# Viewer-side measurement
# ---------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _reference(width: int, height: int) -> tuple[int, int, int, int, int, int]:
    """(x0, x1, y0, y1, closed_count, open_count) of the mouth box at this resolution."""
    x0, x1, y0, y1 = _box_pixels(width, height, even=False)
    g = _Grid.make(width, height, x0, x1, y0, y1)
    closed = int(np.count_nonzero(_ellipse(g, _MOUTH_C, (_MOUTH_RX, _MOUTH_RY_CLOSED)) > 0.5))
    full = int(np.count_nonzero(_ellipse(g, _MOUTH_C, (_MOUTH_RX, _MOUTH_RY_OPEN)) > 0.5))
    return x0, x1, y0, y1, closed, max(full, closed + 1)


def mouth_reference(width: int, height: int) -> dict[str, float]:
    """How to read the opening at this resolution elsewhere (a browser): the size it holds for, the mouth box
    [x0, x1) x [y0, y1), the dark pixel counts of a closed and of a fully open mouth, and the luma threshold (BT.601
    limited range, as `mouth_opening_rgb` computes it from RGB). A frame received at another size (a simulcast
    layer) is scaled to `width` x `height` before it is read."""
    x0, x1, y0, y1, closed, full = _reference(width, height)
    return {"width": width, "height": height, "x0": x0, "x1": x1, "y0": y0, "y1": y1, "closed": closed, "full": full,
            "threshold": DARK_THRESHOLD,
            "ky_r": _KY[0], "ky_g": _KY[1], "ky_b": _KY[2]}


def _opening_from_box(luma_box: npt.NDArray[Any], closed: int, full: int, threshold: float) -> float:
    dark = int(np.count_nonzero(luma_box < threshold))
    val = (dark - closed) / (full - closed)
    return 0.0 if val < 0.0 else (1.0 if val > 1.0 else val)


def mouth_opening_i420(data: bytes | bytearray | memoryview | npt.NDArray[Any], width: int,
                       height: int, *, threshold: float = DARK_THRESHOLD) -> float:
    """Mouth opening (0.0 closed .. 1.0 fully open) read from the Y plane of a tightly packed I420 frame.

    ``width``/``height`` are the received frame's own size (any resolution with the rendered aspect ratio).
    """
    if isinstance(data, np.ndarray):
        flat = data.reshape(-1)
        if flat.dtype != np.uint8:
            raise TypeError("I420 ndarray must be uint8")
    else:
        flat = np.frombuffer(data, dtype=np.uint8)
    if flat.size < width * height:
        raise ValueError(f"I420 buffer too small for {width}x{height}: {flat.size} bytes")
    x0, x1, y0, y1, closed, full = _reference(width, height)
    box = flat[: width * height].reshape(height, width)[y0:y1, x0:x1]
    return _opening_from_box(box, closed, full, threshold)


def mouth_opening_rgb(rgb: npt.NDArray[Any], width: int | None = None, height: int | None = None, *,
                      threshold: float = DARK_THRESHOLD) -> float:
    """Mouth opening read from an (h, w, 3) RGB24 frame (luma computed with the same BT.601 weights)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (h, w, 3) RGB array, got shape {rgb.shape}")
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    if (width is not None and width != w) or (height is not None and height != h):
        raise ValueError(f"array is {w}x{h}, not {width}x{height}")
    x0, x1, y0, y1, closed, full = _reference(w, h)
    box = rgb[y0:y1, x0:x1, :3].astype(np.float32)
    luma = np.float32(16.0) + box @ np.asarray(_KY, dtype=np.float32)
    return _opening_from_box(luma, closed, full, threshold)


def mouth_opening(frame: bytes | bytearray | memoryview | npt.NDArray[Any], width: int, height: int,
                  *, threshold: float = DARK_THRESHOLD) -> float:
    """Mouth opening (0.0 .. 1.0) of a received frame: an (h, w, 3) RGB24 array, or I420 bytes/array.

    Robust to lossy VP8 and to scaling (the geometry is recomputed for the frame's own ``width``/``height``,
    assuming the aspect ratio of the rendering was kept).
    """
    if isinstance(frame, np.ndarray) and frame.ndim == 3:
        return mouth_opening_rgb(frame, width, height, threshold=threshold)
    return mouth_opening_i420(frame, width, height, threshold=threshold)
