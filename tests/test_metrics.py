"""The gateway's metrics: histograms (exact counts and maxima, percentiles within one bucket) and arrival lag."""

from __future__ import annotations

import math
import random

from gateway.metrics import ArrivalClock, GatewayMetrics, LatencyHistogram


def _exact(samples: list[int], p: float) -> int:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def test_percentiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(7)
    samples = [int(rng.lognormvariate(10, 2)) for _ in range(20000)]  # ~20 µs median, spread over decades
    hist = LatencyHistogram()
    for ns in samples:
        hist.record(ns)
    assert hist.count == len(samples) and hist.max_ns == max(samples) and hist.total_ns == sum(samples)
    for p in (1, 10, 50, 90, 99, 99.9, 100):
        exact = _exact(samples, p)
        got = hist.percentile(p)
        # the upper edge of the bucket that holds the exact value: never below it, at most 1/16 above it
        assert exact <= got <= max(exact + 1, exact * 17 / 16), (p, exact, got)


def test_small_values_are_exact_and_huge_ones_are_kept() -> None:
    hist = LatencyHistogram()
    for ns in (0, 1, 5, 15):
        hist.record(ns)
    assert [hist.percentile(p) for p in (25, 50, 75, 100)] == [1.0, 2.0, 6.0, 15.0]
    hist.record(10**15)  # longer than the last bucket's range: counted there, and the max is exact
    assert hist.percentile(100) == 10**15 and hist.count == 5


def test_an_empty_histogram_reports_zeros() -> None:
    summary = LatencyHistogram().summary()
    assert summary["count"] == 0 and summary["p99_us"] == 0.0 and summary["max_us"] == 0.0


def test_report_opens_a_new_window() -> None:
    metrics = GatewayMetrics()
    metrics.chunks = 3
    metrics.hop.record(5000)
    metrics.arrival_lag.record(20_000_000)
    first = metrics.report()
    assert first["chunks"] == 3
    lag = first["arrival_lag"]
    assert isinstance(lag, dict) and lag["count"] == 1 and lag["max_us"] == 20000.0
    second = metrics.report()
    assert second["chunks"] == 0
    assert all(second[k]["count"] == 0 for k in ("hop", "interrupt", "loop_lag", "arrival_lag"))  # type: ignore[index]


MS = 1_000_000
CHUNK = 20 * MS


def test_arrival_lag_is_zero_on_time_and_counts_a_held_up_chunk_and_those_behind_it() -> None:
    clock = ArrivalClock()
    arrivals = [0, 20, 40, 110, 111, 112, 120, 140]  # ms: chunk 3 held up by 50 ms, 4 and 5 queued behind it
    lags = [clock.lag(t * MS, CHUNK) for t in arrivals]
    assert [lag // MS for lag in lags] == [0, 0, 0, 50, 31, 12, 0, 0]


def test_an_agent_ahead_of_real_time_never_lags_and_a_segment_starts_afresh() -> None:
    clock = ArrivalClock()
    assert [clock.lag(t * MS, CHUNK) for t in (0, 5, 10, 15)] == [0, 0, 0, 0]  # 4x real time: all ahead
    # then a chunk at 100 ms with 80 ms of audio before it: the schedule its fastest chunk kept (-45 ms + 80 ms)
    # had it due at 35 ms
    assert clock.lag(100 * MS, CHUNK) == 65 * MS
    clock.reset()  # a pause between segments is not lateness
    assert clock.lag(10_000 * MS, CHUNK) == 0
    assert clock.lag(10_030 * MS, CHUNK) == 10 * MS
