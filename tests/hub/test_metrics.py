"""Issue 2, point 7: metrics per instance and aggregate, percentiles within the sketch's bound,
rotating window versus all time, bounded memory, metrics() and status() shapes."""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import tracemalloc
import types

import numpy as np
import pandas as pd
import pytest
from hub_helpers import res
from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_jupyter.hub import RELATIVE_ACCURACY, InstanceMetrics, ResourceFailed, UserError
from gleitzeit_jupyter.hub.metrics import BIN_LIMIT, HISTORY_LIMIT, merge_summaries
from gleitzeit_jupyter.testing.memory import MemoryConfig

DESIGN_COLUMNS = [
    "instance",
    "status",
    "breaker",
    "in_flight",
    "requests",
    "successes",
    "failures",
    "success_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "last_error",
]


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def within_bound(estimate: float, samples, q: float) -> bool:
    """DDSketch: the estimate is within the relative accuracy of the exact q-quantile (of
    the order statistics bracketing rank q*(n-1))."""
    lo = float(np.quantile(samples, q, method="lower"))
    hi = float(np.quantile(samples, q, method="higher"))
    a = RELATIVE_ACCURACY
    return lo * (1 - a) - 1e-9 <= estimate <= hi * (1 + a) + 1e-9


# ---- percentiles ----------------------------------------------------------------------
@pytest.mark.parametrize("dist", ["lognormal", "exponential", "bimodal"])
def test_percentiles_are_within_the_sketch_bound_of_exact_quantiles(dist):
    rng = np.random.default_rng(42)
    if dist == "lognormal":
        samples = rng.lognormal(mean=3.0, sigma=1.0, size=20_000)
    elif dist == "exponential":
        samples = rng.exponential(scale=40.0, size=20_000)
    else:
        samples = np.concatenate([rng.normal(5, 0.5, 15_000), rng.normal(900, 50, 5_000)])
        samples = np.abs(samples)
    m = InstanceMetrics()
    for x in samples:
        m.record(float(x), True)
    s = m.summary()
    assert s.requests == len(samples)
    for q, est in ((0.5, s.p50_ms), (0.95, s.p95_ms), (0.99, s.p99_ms)):
        assert within_bound(est, samples, q), (q, est)
    assert s.mean_ms == pytest.approx(statistics.fmean(samples), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0.01, max_value=1e5, allow_nan=False), min_size=1, max_size=300)
)
def test_percentiles_bound_holds_for_any_sample(samples):
    m = InstanceMetrics()
    for x in samples:
        m.record(x, True)
    s = m.summary()
    for q, est in ((0.5, s.p50_ms), (0.95, s.p95_ms), (0.99, s.p99_ms)):
        assert within_bound(est, samples, q), (q, est)


def test_aggregate_percentiles_merge_exactly_across_instances():
    rng = random.Random(5)
    parts = [[rng.lognormvariate(2 + k, 0.6) for _ in range(3000)] for k in range(3)]
    metrics = []
    for part in parts:
        m = InstanceMetrics()
        for x in part:
            m.record(x, True)
        metrics.append(m)
    everything = [x for part in parts for x in part]
    total = merge_summaries(metrics)
    assert total.requests == 9000
    for q, est in ((0.5, total.p50_ms), (0.95, total.p95_ms), (0.99, total.p99_ms)):
        assert within_bound(est, everything, q)


# ---- window versus all time -----------------------------------------------------------
def test_rotating_window_describes_recent_calls_all_time_everything():
    clock = Clock()
    m = InstanceMetrics(window=10.0, bucket_seconds=1.0, clock=clock, wall_clock=lambda: 0.0)
    for _ in range(200):
        m.record(100.0, True)
        clock.now += 0.01
    m.record(5.0, False, "boom")
    clock.now += 30  # the slow era leaves the window
    for _ in range(50):
        m.record(1.0, True)
        clock.now += 0.05
    recent, ever = m.summary(window=True), m.summary()
    assert recent.requests == 50 and recent.failures == 0
    assert recent.p50_ms == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert recent.p99_ms == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert ever.requests == 251 and ever.failures == 1 and ever.successes == 250
    assert ever.p50_ms == pytest.approx(100.0, rel=RELATIVE_ACCURACY)
    clock.now += 30
    empty = m.summary(window=True)
    assert empty.requests == 0 and empty.p50_ms is None and empty.success_rate is None
    assert m.summary().requests == 251  # all time is kept


def test_window_slides_bucket_by_bucket():
    clock = Clock()
    m = InstanceMetrics(window=5.0, bucket_seconds=1.0, clock=clock, wall_clock=lambda: 0.0)
    for second in range(20):
        for _ in range(10):
            m.record(float(second + 1), True)
        clock.now += 0.999  # just before the next bucket starts
        assert m.summary(window=True).requests == 10 * min(second + 1, 5)
        clock.now += 0.001
    # the window holds seconds 15..19, whose latencies were 16..20 ms
    assert 16 * 0.99 <= m.summary(window=True).p50_ms <= 20 * 1.01


async def test_provider_metrics_window_and_all_time(pool, monkeypatch):
    p = await pool(["a"], metrics_window=0.5)
    for _ in range(5):
        await p.execute("m", {})
    frame = p.metrics(window=True)  # (pandas is imported already: no import in the window)
    assert isinstance(frame, pd.DataFrame)
    assert int(frame.loc[frame.instance == "a", "requests"].iloc[0]) == 5
    import asyncio

    await asyncio.sleep(0.55)
    recent, ever = p.metrics(window=True), p.metrics()
    assert int(recent.loc[recent.instance == "a", "requests"].iloc[0]) == 0
    assert int(ever.loc[ever.instance == "a", "requests"].iloc[0]) == 5


# ---- bounded memory -------------------------------------------------------------------
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, Clock)


def deep_size(obj) -> int:
    """Bytes held by ``obj`` and everything it references, except shared code objects
    (classes, modules, functions: the clocks)."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _SHARED):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def fill(n: int, span: float = 5000.0) -> InstanceMetrics:
    """``n`` samples spread over ``span`` fake seconds, cycling through eight latencies from
    0.1 ms to 10 s: whatever ``n``, every bucket of the window and every history row sees the
    same values, so any growth with ``n`` would be per-sample storage."""
    clock = Clock()
    m = InstanceMetrics(clock=clock, wall_clock=lambda: 0.0)
    lat = [0.1, 0.7, 3.0, 12.0, 80.0, 450.0, 2600.0, 10_000.0]
    step = span / n
    for k in range(n):
        m.record(lat[k & 7], k % 50 != 0, None if k % 50 else "flaked")
        clock.now += step
    return m


def test_memory_is_bounded_for_a_million_samples():
    small = fill(10_000)
    big = fill(1_000_000)
    assert big.requests == 1_000_000
    assert len(big.history) == len(small.history) == HISTORY_LIMIT
    assert len(big._buckets) == len(small._buckets)
    # the structures do not grow with the number of samples
    assert deep_size(big) <= 1.1 * deep_size(small)
    assert deep_size(big) < 4 * 1024 * 1024
    # and recording more allocates nothing that stays
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for k in range(20_000):
            big.record(float(k % 300 + 1), True)
            big._clock.now += 0.001
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 64 * 1024


def test_a_sketch_never_grows_past_its_bin_limit():
    m = InstanceMetrics()
    samples = [10 ** (k % 100 / 10 - 3) for k in range(20_000)]  # 1 us .. 1e7 ms
    for x in samples:
        m.record(x, True)
    assert len(m.all_time._store.bins) <= BIN_LIMIT  # collapsed: far more keys than that
    s = m.summary()
    # collapsing sacrifices the lowest bins only: the upper percentiles keep the bound
    assert within_bound(s.p95_ms, samples, 0.95) and within_bound(s.p99_ms, samples, 0.99)


# ---- through the provider -------------------------------------------------------------
async def test_counts_per_instance_and_aggregate(pool):
    p = await pool([MemoryConfig("a", latency=0.01), "b"], retries=0)
    for _ in range(6):
        await p.execute("m", {}, instance="a")
    for _ in range(3):
        await p.execute("m", {}, instance="b")
    res(p, "b").fail = True
    for _ in range(2):
        with pytest.raises(ResourceFailed):
            await p.execute("m", {}, instance="b")
    with pytest.raises(UserError):
        await p.execute("bad", {}, instance="a")
    frame = p.metrics().set_index("instance")
    a, b, total = frame.loc["a"], frame.loc["b"], frame.loc["ALL"]
    assert (a.requests, a.successes, a.failures, a.success_rate) == (7, 6, 0, 1.0)
    assert (b.requests, b.successes, b.failures) == (5, 3, 2)
    assert b.success_rate == pytest.approx(0.6)
    assert "b is down" in b.last_error
    assert a.last_error == "bad method"  # a user error is recorded but not a failure
    assert (total.requests, total.successes, total.failures) == (12, 9, 2)
    assert total.p50_ms >= 10.0 * (1 - RELATIVE_ACCURACY)  # the slow instance dominates
    assert a.p50_ms >= 10.0 * (1 - RELATIVE_ACCURACY) and b.p50_ms < 10.0
    assert total.in_flight == 0


async def test_latency_is_measured_and_returned(pool):
    p = await pool([MemoryConfig("a", latency=0.02)])
    r = await p.execute("m", {})
    assert r["latency_ms"] >= 20.0
    assert r["instance"] == "a"


async def test_in_flight_is_counted(pool):
    import asyncio

    p = await pool(["a"])
    tasks = [asyncio.create_task(p.execute("m", {"latency": 0.1})) for _ in range(3)]
    await asyncio.sleep(0.02)
    frame = p.metrics().set_index("instance")
    assert frame.loc["a", "in_flight"] == 3 and frame.loc["ALL", "in_flight"] == 3
    await asyncio.gather(*tasks)
    assert p.metrics().set_index("instance").loc["a", "in_flight"] == 0


async def test_metrics_frame_has_the_design_columns(pool):
    p = await pool(["a", "b"])
    frame = p.metrics()
    assert list(frame.columns[:3]) == ["instance", "endpoint", "status"]
    assert set(DESIGN_COLUMNS) <= set(frame.columns)
    assert list(frame["instance"]) == ["a", "b", "ALL"]
    assert frame.loc[frame.instance == "a", "success_rate"].isna().all()  # no calls yet


async def test_status_is_json_serialisable_and_complete(pool):
    p = await pool(["a", "b"], retries=0)
    await p.execute("m", {})
    res(p, "b").fail = True
    with pytest.raises(ResourceFailed):
        await p.execute("m", {}, instance="b")
    p.drain("a")
    p.get_instance("a").metadata["models"] = ["x"]
    snap = p.status()
    text = json.dumps(snap, allow_nan=False)
    assert json.loads(text) == snap
    assert {"name", "kind", "strategy", "initialized", "time", "queue", "instances", "totals"} <= (
        set(snap)
    )
    row = next(r for r in snap["instances"] if r["id"] == "b")
    for key in (
        "endpoint",
        "status",
        "breaker",
        "in_flight",
        "enabled",
        "origin",
        "tags",
        "metadata",
        "requests",
        "successes",
        "failures",
        "success_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "last_error",
        "last_error_at",
    ):
        assert key in row
    assert row["failures"] == 1 and "down" in row["last_error"]
    assert snap["totals"]["instances"] == 2 and snap["totals"]["healthy"] == 1
    assert snap["queue"] == {"waiting": 0, "tenants": 0}


async def test_metrics_history_frame(pool):
    p = await pool(["a"])
    for _ in range(3):
        await p.execute("m", {})
    hist = p.metrics_history()
    assert list(hist.columns) == [
        "time",
        "instance",
        "requests",
        "errors",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
    ]
    assert hist["requests"].sum() == 3


async def test_provider_extras_become_columns_and_status_keys():
    from gleitzeit_jupyter.testing.memory import MemoryProvider

    class WithExtras(MemoryProvider):
        def instance_extras(self, instance):
            return {"tokens_per_s": 12.5, "runs": instance.handle.calls}

    async with WithExtras([MemoryConfig("a")], health_check_interval=60) as p:
        await p.execute("m", {})
        frame = p.metrics().set_index("instance")
        assert frame.loc["a", "tokens_per_s"] == 12.5 and frame.loc["a", "runs"] == 1
        row = p.status()["instances"][0]
        assert row["tokens_per_s"] == 12.5 and row["runs"] == 1


async def test_last_error_says_when(pool):
    import time

    p = await pool(["a"], retries=0)
    res(p, "a").fail = True
    before = time.time()
    with pytest.raises(ResourceFailed):
        await p.execute("m", {})
    frame = p.metrics().set_index("instance")
    when = frame.loc["a", "last_error_at"]
    assert before - 1 <= when.timestamp() <= time.time() + 1
    assert frame.loc["ALL", "last_error"] == frame.loc["a", "last_error"]
    row = p.status()["instances"][0]
    assert before - 1 <= row["last_error_at"] <= time.time() + 1


def test_recent_success_rate_forgets_an_outage_the_window_still_holds() -> None:
    now = [0.0]
    m = InstanceMetrics(window=300, bucket_seconds=5, clock=lambda: now[0])
    for _ in range(20):
        m.record(1.0, False, "down")
    now[0] = 100.0
    for _ in range(10):
        m.record(1.0, True)
    assert m.summary(window=True).success_rate == 10 / 30  # the 5-minute window remembers
    assert m.recent_success_rate(30) == 1.0  # health looks at the last 30 s only
    assert m.recent_success_rate(30, min_calls=11) is None
    now[0] = 105.0
    assert m.recent_success_rate(300) == 10 / 30
