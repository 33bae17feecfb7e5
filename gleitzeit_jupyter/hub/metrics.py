"""Latency and outcome metrics with bounded memory.

Percentiles come from DDSketch (relative error ≤ ``RELATIVE_ACCURACY`` on every quantile;
the store collapses its lowest bins past ``BIN_LIMIT`` so a sketch never grows beyond it).
Each instance keeps an all-time sketch plus a ring of time buckets covering the recent window;
a finished bucket also leaves a small summary row in a bounded history for plotting.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ddsketch import (
    CollapsingLowestDenseStore,
    LogarithmicMapping,
    LogCollapsingLowestDenseDDSketch,
)
from ddsketch.ddsketch import BaseDDSketch

__all__ = [
    "RELATIVE_ACCURACY",
    "InstanceMetrics",
    "MetricsSummary",
    "export_sketch",
    "import_sketch",
    "merge_summaries",
]

RELATIVE_ACCURACY = 0.01  # every reported percentile is within 1 % of the true value
BIN_LIMIT = 1024
FAILURE_PENALTY_MS = 1000.0  # latency charged to least_latency's cost for a failed call
HISTORY_LIMIT = 720  # summary rows kept per instance (one hour at 5 s buckets)


def _new_sketch() -> LogCollapsingLowestDenseDDSketch:
    return LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, bin_limit=BIN_LIMIT)


def export_sketch(sketch: Any) -> dict[str, Any] | None:
    """A sketch as plain data: its positive bins as ``[key, count]`` pairs (latencies are
    never negative), the zero count and the relative accuracy that fixes the bin layout.
    The sketch is merged into one whose store we own, so only public API is read."""
    if sketch is None or sketch.count == 0:
        return None
    store = CollapsingLowestDenseStore(BIN_LIMIT)
    own = BaseDDSketch(
        mapping=LogarithmicMapping(RELATIVE_ACCURACY),
        store=store,
        negative_store=CollapsingLowestDenseStore(BIN_LIMIT),
        zero_count=0.0,
    )
    own.merge(sketch)
    bins = [[store.offset + i, c] for i, c in enumerate(store.bins) if c]
    return {
        "relative_accuracy": RELATIVE_ACCURACY,
        "bins": bins,
        "zero_count": own.count - sum(c for _, c in bins),
        "count": own.count,
        "sum": own.sum,
    }


def import_sketch(data: dict[str, Any]) -> LogCollapsingLowestDenseDDSketch:
    """The sketch :func:`export_sketch` described. Each bin comes back as its representative
    value, so quantiles are those of the saved sketch; the sum is within the accuracy bound."""
    sketch = _new_sketch()
    mapping = LogarithmicMapping(data.get("relative_accuracy", RELATIVE_ACCURACY))
    for key, count in data["bins"]:
        sketch.add(mapping.value(key), count)
    zero = data.get("zero_count") or 0
    if zero > 0:
        sketch.add(0.0, zero)
    return sketch


class _Bucket:
    __slots__ = ("failures", "requests", "sketch", "start")

    def __init__(self, start: float):
        self.start = start
        self.requests = 0
        self.failures = 0
        self.sketch = _new_sketch()


@dataclass
class MetricsSummary:
    requests: int = 0
    successes: int = 0
    failures: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None

    @property
    def success_rate(self) -> float | None:
        done = self.successes + self.failures
        return self.successes / done if done else None


def _quantiles(sketch: Any) -> tuple[float | None, float | None, float | None, float | None]:
    if sketch is None or sketch.count == 0:
        return None, None, None, None
    q = sketch.get_quantile_value
    return q(0.5), q(0.95), q(0.99), sketch.sum / sketch.count


class InstanceMetrics:
    """Counters and latency sketches of one instance.

    ``record`` is on the hot path of every call: O(1), no allocation in the common case.
    """

    def __init__(
        self,
        window: float = 300.0,
        bucket_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.window = window
        self.bucket_seconds = bucket_seconds
        self._clock = clock
        self._wall = wall_clock
        # wall time = monotonic + offset; fixed at creation so history rows are monotone
        self._wall_offset = wall_clock() - clock()
        # Identities of the metric histories these counters contain: this one's own, plus
        # every saved one merged in. Loading a save whose lineage is already here (the same
        # file twice, or a save made by this very kernel) must not count it again.
        self.lineage: set[str] = {uuid.uuid4().hex}
        self.requests = 0
        self.successes = 0
        self.failures = 0  # infrastructure failures
        self.user_errors = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall clock, for display
        # Samples of every closed bucket; the open bucket joins it when it closes, so each
        # call adds to one sketch only (the hot path), and reads merge the two.
        self._closed = _new_sketch()
        self._buckets: deque[_Bucket] = deque(maxlen=max(1, math.ceil(window / bucket_seconds)))
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_LIMIT)
        # peak-EWMA of latency for least_latency balancing
        self.ewma_ms: float | None = None
        self._ewma_at = 0.0
        self.ewma_tau = 10.0

    # recording --------------------------------------------------------------------------
    def _bucket(self, now: float) -> _Bucket:
        buckets = self._buckets
        if buckets:
            last = buckets[-1]
            if now - last.start < self.bucket_seconds:
                return last
            self._close(last)
            start = last.start + self.bucket_seconds * ((now - last.start) // self.bucket_seconds)
        else:
            start = now
        bucket = _Bucket(start)
        buckets.append(bucket)
        return bucket

    def _close(self, bucket: _Bucket) -> None:
        if bucket.sketch.count:
            self._closed.merge(bucket.sketch)
        p50, p95, p99, mean = _quantiles(bucket.sketch)
        self.history.append(
            {
                "time": bucket.start + self._wall_offset,
                "requests": bucket.requests,
                "errors": bucket.failures,
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "mean_ms": mean,
            }
        )

    def record(self, latency_ms: float, ok: bool, error: str | None = None) -> None:
        """One finished call. ``ok=False`` is an infrastructure failure."""
        now = self._clock()
        self.requests += 1
        if latency_ms < 0:
            latency_ms = 0.0
        bucket = self._bucket(now)
        bucket.requests += 1
        if ok:
            self.successes += 1
            bucket.sketch.add(latency_ms)
        else:
            self.failures += 1
            bucket.failures += 1
            self._set_error(error)
            # A fast failure must not make the instance look cheap to least_latency: count
            # it as a sample well above anything seen (peak-EWMA jumps to it at once).
            latency_ms = max(latency_ms, FAILURE_PENALTY_MS, 4.0 * (self.ewma_ms or 0.0))
        self._update_ewma(latency_ms, now)

    def record_user_error(self, error: str | None) -> None:
        """A call refused as the caller's mistake: counted, but not against the instance."""
        self.requests += 1
        self.user_errors += 1
        self._bucket(self._clock()).requests += 1
        self._set_error(error)

    def _set_error(self, error: str | None) -> None:
        self.last_error = error
        self.last_error_at = self._wall()

    def _update_ewma(self, latency_ms: float, now: float) -> None:
        # Peak-EWMA (Finagle): jump up at once on a slow sample, decay slowly otherwise.
        if self.ewma_ms is None or latency_ms > self.ewma_ms:
            self.ewma_ms = latency_ms
        else:
            w = math.exp(-(now - self._ewma_at) / self.ewma_tau)
            self.ewma_ms = self.ewma_ms * w + latency_ms * (1.0 - w)
        self._ewma_at = now

    # reading ----------------------------------------------------------------------------
    @property
    def all_time(self) -> Any:
        """A sketch of every successful call's latency (a merged copy: read, don't add)."""
        merged = _new_sketch()
        if self._closed.count:
            merged.merge(self._closed)
        if self._buckets and self._buckets[-1].sketch.count:
            merged.merge(self._buckets[-1].sketch)
        return merged

    def absorb(self, sketch: Any) -> None:
        """Add a saved all-time sketch (a restored pool's latencies) to this one."""
        if sketch.count:
            self._closed.merge(sketch)

    def _window_buckets(self) -> list[_Bucket]:
        now = self._clock()
        return [b for b in self._buckets if now - b.start < self.window]

    def recent_success_rate(self, seconds: float, min_calls: int = 10) -> float | None:
        """Success rate over the last ``seconds`` (None below ``min_calls`` finished calls).
        Health uses a short span, so an instance that recovered is not held DEGRADED for a
        whole metrics window by failures from its outage."""
        now = self._clock()
        ok = failed = 0
        for bucket in reversed(self._buckets):
            if now - bucket.start >= seconds + self.bucket_seconds:
                break
            ok += int(bucket.sketch.count)
            failed += bucket.failures
        done = ok + failed
        return ok / done if done >= min_calls else None

    def window_sketch(self) -> Any:
        merged = _new_sketch()
        for bucket in self._window_buckets():
            if bucket.sketch.count:
                merged.merge(bucket.sketch)
        return merged

    def summary(self, window: bool = False) -> MetricsSummary:
        if window:
            buckets = self._window_buckets()
            sketch = self.window_sketch()
            requests = sum(b.requests for b in buckets)
            failures = sum(b.failures for b in buckets)
            successes = int(sketch.count)
        else:
            sketch = self.all_time
            requests, failures, successes = self.requests, self.failures, self.successes
        p50, p95, p99, mean = _quantiles(sketch)
        return MetricsSummary(requests, successes, failures, p50, p95, p99, mean)

    def history_rows(self) -> list[dict[str, Any]]:
        """Closed buckets plus the one being filled, oldest first."""
        rows = list(self.history)
        if self._buckets:
            current = self._buckets[-1]
            p50, p95, p99, mean = _quantiles(current.sketch)
            rows.append(
                {
                    "time": current.start + self._wall_offset,
                    "requests": current.requests,
                    "errors": current.failures,
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "p99_ms": p99,
                    "mean_ms": mean,
                }
            )
        return rows

    def dump(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "user_errors": self.user_errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "lineage": sorted(self.lineage),
            "history": self.history_rows(),
        }


def merge_summaries(metrics: Iterable[InstanceMetrics], window: bool = False) -> MetricsSummary:
    """Aggregate over instances: sketches merge exactly, so pool percentiles keep the bound."""
    merged = _new_sketch()
    total = MetricsSummary()
    for m in metrics:
        part = m.summary(window)
        total.requests += part.requests
        total.successes += part.successes
        total.failures += part.failures
        sketch = m.window_sketch() if window else m.all_time
        if sketch.count:
            merged.merge(sketch)
    total.p50_ms, total.p95_ms, total.p99_ms, total.mean_ms = _quantiles(merged)
    return total
