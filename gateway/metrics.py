"""In-process metrics: log-bucketed latency histograms with O(1) record and no allocation per sample."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

_SUB = 16  # buckets per octave: a bucket is at most 1/16 (6.25%) wide, so percentiles are that accurate
_SUB_BITS = 4
_BUCKETS = _SUB * 40  # up to 2**40 ns (18 minutes); anything longer lands in the last bucket


def _bucket(ns: int) -> int:
    """Bucket of a non-negative latency: exact below 16 ns, then 16 per octave (integer operations only)."""
    if ns < _SUB:
        return ns if ns > 0 else 0
    shift = ns.bit_length() - _SUB_BITS - 1
    return min(_BUCKETS - 1, shift * _SUB + (ns >> shift))


def _upper_edge(index: int) -> int:
    """The smallest latency above every latency of bucket `index`."""
    if index < _SUB:
        return index + 1
    shift, mantissa = divmod(index, _SUB)
    return (mantissa + _SUB + 1) << (shift - 1)


class LatencyHistogram:
    """Nanosecond latencies in log-spaced buckets; `record` is a few integer operations and allocates nothing."""

    def __init__(self) -> None:
        self._buckets = [0] * _BUCKETS
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        """Add one sample."""
        self.count += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        self._buckets[_bucket(ns)] += 1

    def percentile(self, p: float) -> float:
        """The p-th percentile (0-100) in nanoseconds: the upper edge of the bucket holding it (never above max)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index, n in enumerate(self._buckets):
            seen += n
            if seen >= rank:
                top = self.max_ns if index == _BUCKETS - 1 else min(self.max_ns, _upper_edge(index))
                return float(top)
        return float(self.max_ns)

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p90, p99, p999, max (µs)."""
        mean = self.total_ns / self.count if self.count else 0.0
        return {
            "count": self.count,
            "mean_us": mean / 1e3,
            "p50_us": self.percentile(50) / 1e3,
            "p90_us": self.percentile(90) / 1e3,
            "p99_us": self.percentile(99) / 1e3,
            "p999_us": self.percentile(99.9) / 1e3,
            "max_us": self.max_ns / 1e3,
        }


@dataclass
class GatewayMetrics:
    """What one gateway process measures about itself, since it started or since the last `report`."""

    # audio chunk received from the agent -> handed to the provider (validation, resampling, accounting)
    hop: LatencyHistogram = field(default_factory=LatencyHistogram)
    chunks: int = 0
    # clear_buffer received -> every queue cleared (no stale sample can leave the gateway after this)
    interrupt: LatencyHistogram = field(default_factory=LatencyHistogram)
    # how late the event loop ran a task that asked to run now (every chunk and frame waits that long, at least)
    loop_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    # how far behind real time each chunk of a segment arrived (ArrivalClock): the agent's pacing plus network and
    # scheduling delays on the way in; lag beyond the provider's buffer is an underrun that is not the gateway's doing
    arrival_lag: LatencyHistogram = field(default_factory=LatencyHistogram)
    # a stream-pair vendor's (Simli's) media arrived at the gateway -> its audio went to the room's audio source,
    # and its video frame to the video source (once its audio started to play)
    republish_audio: LatencyHistogram = field(default_factory=LatencyHistogram)
    republish_video: LatencyHistogram = field(default_factory=LatencyHistogram)
    # provider seconds used (what vendors bill), by provider, of the sessions that ended in the window
    provider_seconds: dict[str, float] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)

    def record_provider_time(self, provider: str, seconds: float) -> None:
        """A session of `provider` ended having used its provider for `seconds`."""
        self.provider_seconds[provider] = self.provider_seconds.get(provider, 0.0) + seconds

    def record_republish(self, kind: str, seconds: float) -> None:
        """A stream-pair frame's audio ("audio") or video ("video") left for the room `seconds` after it arrived."""
        histogram = self.republish_audio if kind == "audio" else self.republish_video
        histogram.record(max(0, round(seconds * 1e9)))

    def report(self) -> dict[str, object]:
        """The figures of the window that ends now, and a new window."""
        now = time.monotonic()
        figures: dict[str, object] = {"window_s": round(now - self.since, 3), "chunks": self.chunks,
                                      "hop": self.hop.summary(), "interrupt": self.interrupt.summary(),
                                      "loop_lag": self.loop_lag.summary(), "arrival_lag": self.arrival_lag.summary(),
                                      "republish_audio": self.republish_audio.summary(),
                                      "republish_video": self.republish_video.summary(),
                                      "provider_seconds": {k: round(v, 3) for k, v in self.provider_seconds.items()}}
        self.hop, self.interrupt, self.loop_lag = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        self.arrival_lag, self.republish_audio, self.republish_video = (LatencyHistogram(), LatencyHistogram(),
                                                                        LatencyHistogram())
        self.chunks, self.since, self.provider_seconds = 0, now, {}
        return figures


class ArrivalClock:
    """How late a segment's chunks arrive against the earliest real-time schedule the segment has kept so far.

    Chunk k of a segment, with `before` ns of audio ahead of it, "should" arrive at anchor + before, where anchor is
    the smallest (arrival - before) seen in the segment: an agent on time or ahead of real time lags 0, and a chunk
    held up by 50 ms lags 50 ms, as do the chunks queued behind it until the agent catches up.
    """

    __slots__ = ("_anchor", "_audio_ns")

    def __init__(self) -> None:
        self._anchor: int | None = None
        self._audio_ns = 0

    def lag(self, received_ns: int, duration_ns: int) -> int:
        """Record a chunk of `duration_ns` of audio that arrived at `received_ns`; its lag in ns."""
        anchor = received_ns - self._audio_ns
        self._audio_ns += duration_ns
        if self._anchor is None or anchor < self._anchor:
            self._anchor = anchor
        return anchor - self._anchor

    def reset(self) -> None:
        """A new segment begins (an agent may pause between segments)."""
        self._anchor = None
        self._audio_ns = 0


LAG_PROBE_PERIOD_S = 0.05


async def probe_loop_lag(metrics: GatewayMetrics) -> None:
    """Forever: yield to the loop every LAG_PROBE_PERIOD_S and record how late it came back."""
    while True:
        asked = time.perf_counter_ns()
        await asyncio.sleep(0)
        metrics.loop_lag.record(time.perf_counter_ns() - asked)
        await asyncio.sleep(LAG_PROBE_PERIOD_S)
