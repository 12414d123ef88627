"""Summaries of samples: median, 95th percentile and spread, and how to print them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values``, interpolating linearly between ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """The distribution of one measurement over its samples."""

    count: int
    median: float
    p95: float
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(
            count=len(values),
            median=percentile(values, 0.5),
            p95=percentile(values, 0.95),
            q1=percentile(values, 0.25),
            q3=percentile(values, 0.75),
            low=min(values),
            high=max(values),
        )


def seconds(value: float) -> str:
    """A duration for a table: ``0.42 ms``, ``12.3 ms``, ``212 ms``, ``1.23 s``, ``61.0 s``."""
    if value < 0:
        return "-" + seconds(-value)
    if value < 0.001:
        return f"{value * 1000:.2f} ms"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s"


def fine(value: float) -> str:
    """A short duration to the microsecond: ``12.3 µs``; from a millisecond on as
    :func:`seconds`."""
    if 0 <= value < 0.001:
        return f"{value * 1e6:.1f} µs"
    return seconds(value)


def megabytes(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def ratio(value: float) -> str:
    return f"{value:.2f}×"
