"""Percentiles of a benchmark's samples."""

from __future__ import annotations


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank p-th percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]
