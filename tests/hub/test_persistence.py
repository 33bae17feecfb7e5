"""Save a pool to SQLite and bring it back: instances, counters, percentiles, history."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gleitzeit_jupyter.hub import ResourceFailed, UserError
from gleitzeit_jupyter.hub import persistence as store
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


def _pool(*names: str, **opts) -> MemoryProvider:
    opts.setdefault("health_check_interval", 60)
    return MemoryProvider(
        [MemoryConfig(n, latency=0.0, accepts={"m1", "m2"} if n == "a" else None) for n in names],
        **opts,
    )


async def _drive(p: MemoryProvider, n: int) -> None:
    # Varied latencies so the percentiles differ from each other.
    await asyncio.gather(
        *(p.execute("echo", {"value": i, "latency": 0.001 * (i % 10)}) for i in range(n))
    )


async def test_round_trip_into_a_fresh_provider(tmp_path):
    path = tmp_path / "pool.sqlite"
    async with _pool("a", "b", strategy="round_robin") as p:
        await _drive(p, 60)
        p.get_instance("b").handle.fail = True
        with pytest.raises(ResourceFailed):
            await p.execute("echo", {"value": "x"}, instance="b")
        p.drain("b")
        before = p.metrics().set_index("instance")
        hist_before = p.metrics_history()
        await store.save_pool(p, path)

    # "Tomorrow": a provider that knows nothing about a or b.
    async with MemoryProvider([], name="memory", health_check_interval=60) as q:
        assert q.instances == []
        report = await store.load_pool(q, path)
        assert sorted(report.added) == ["a", "b"]
        assert report.failed == {}
        after = q.metrics().set_index("instance")
        for inst in ("a", "b", "ALL"):
            for col in ("requests", "successes", "failures"):
                assert after.loc[inst, col] == before.loc[inst, col], (inst, col)
            for col in ("p50_ms", "p95_ms", "p99_ms"):
                if before.loc[inst, col] == before.loc[inst, col]:  # not NaN
                    assert after.loc[inst, col] == pytest.approx(before.loc[inst, col], rel=0.02)
        assert after.loc["b", "last_error"] == before.loc["b", "last_error"]
        assert q.strategy == "round_robin"
        assert q.get_instance("b").enabled is False  # drained stays drained
        assert q.get_instance("a").config.accepts == {"m1", "m2"}  # set survives JSON
        hist_after = q.metrics_history()
        assert len(hist_after) == len(hist_before) > 0
        assert hist_after["requests"].sum() == hist_before["requests"].sum()
        # The restored pool works and keeps counting on top of yesterday.
        r = await q.execute("echo", {"value": 1})
        assert r["instance"] == "a"
        assert q.metrics().set_index("instance").loc["a", "requests"] == (
            before.loc["a", "requests"] + 1
        )


async def test_load_merges_into_existing_instances_and_saves_again(tmp_path):
    path = tmp_path / "pool.sqlite"
    async with _pool("a") as p:
        await _drive(p, 20)
        await store.save_pool(p, path)
    async with _pool("a") as q:
        await _drive(q, 5)
        report = await store.load_pool(q, path)
        assert report.merged == ["a"] and report.added == []
        assert q.get_instance("a").metrics.requests == 25
        # history rows: one per time bucket, ordered, no duplicates
        times = [r["time"] for r in q.get_instance("a").metrics.history]
        assert times == sorted(times) and len(times) == len(set(times))
        again = await store.load_pool(q, path)  # the same save once more: no double count
        assert again.already == ["a"] and again.history_rows == 0
        assert q.get_instance("a").metrics.requests == 25
        await store.save_pool(q, path)
    pools = store.read(path)
    assert pools["memory"].instances[0].counters["requests"] == 25


async def test_save_then_load_in_the_same_process_counts_nothing_twice(tmp_path):
    path = tmp_path / "pool.sqlite"
    async with _pool("a") as p:
        await _drive(p, 20)
        before = p.metrics().set_index("instance")
        await store.save_pool(p, path)
        await _drive(p, 3)  # calls after the save are kept, not replaced
        report = await store.load_pool(p, path)
        assert report.already == ["a"]
        after = p.metrics().set_index("instance")
        assert after.loc["a", "requests"] == before.loc["a", "requests"] + 3
        assert after.loc["a", "p50_ms"] == pytest.approx(before.loc["a", "p50_ms"], rel=0.5)
        # and a restored pool saved again, then loaded elsewhere, brings each call once
        await store.save_pool(p, path)
    async with _pool("a") as q:
        await store.load_pool(q, path)
        assert q.get_instance("a").metrics.requests == 23


async def test_file_keeps_other_pools_and_reports_unknown_names(tmp_path):
    path = tmp_path / "pools.sqlite"
    async with _pool("a", name="one") as p1, _pool("x", "y", name="two") as p2:
        await store.save_pool(p1, path)
        await store.save_pool(p2, path)
        await store.save_pool(p1, path)  # re-saving replaces, does not duplicate
    pools = store.read(path)
    assert sorted(pools) == ["one", "two"]
    assert [i.id for i in pools["two"].instances] == ["x", "y"]
    assert [i.id for i in pools["one"].instances] == ["a"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 3
    async with _pool(name="three") as p3:
        with pytest.raises(UserError, match="no pool 'three'"):
            await store.load_pool(p3, path)
    with pytest.raises(UserError, match="no saved pools"):
        store.read(tmp_path / "missing.sqlite")


async def test_foreign_config_type_is_not_instantiated(tmp_path):
    path = tmp_path / "pool.sqlite"
    async with _pool("a") as p:
        state = store.capture(p)
    state.instances[0].config_type = "dataclass:os:system"
    state.instances[0].key = "other"
    store.write(path, state)
    async with MemoryProvider([], name="memory", health_check_interval=60) as q:
        report = await store.load_pool(q, path)
        assert report.added == []
        assert "not this provider's config class" in report.failed["other"]
        assert q.instances == []


def test_survives_a_process_restart(tmp_path):
    """Save in one interpreter, load in another (the kernel-restart case)."""
    path = tmp_path / "pool.sqlite"
    save = textwrap.dedent(
        f"""
        import asyncio
        from gleitzeit_jupyter.hub import persistence as store
        from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider
        async def main():
            async with MemoryProvider([MemoryConfig("a"), MemoryConfig("b")],
                                      health_check_interval=60) as p:
                await asyncio.gather(*(p.execute("e", {{"latency": 0.002}}) for _ in range(40)))
                await store.save_pool(p, {str(path)!r})
                print(p.metrics().set_index("instance").loc["ALL", "p95_ms"])
        asyncio.run(main())
        """
    )
    load = (
        save.replace(
            'await asyncio.gather(*(p.execute("e", {"latency": 0.002}) for _ in range(40)))',
            "pass",
        )
        .replace('[MemoryConfig("a"), MemoryConfig("b")]', "[]")
        .replace("await store.save_pool", "await store.load_pool")
    )
    out1 = subprocess.run(
        [sys.executable, "-c", save], capture_output=True, text=True, check=True, timeout=60
    )
    out2 = subprocess.run(
        [sys.executable, "-c", load], capture_output=True, text=True, check=True, timeout=60
    )
    p95_before, p95_after = float(out1.stdout), float(out2.stdout)
    assert p95_before > 1.0
    assert p95_after == pytest.approx(p95_before, rel=0.02)


def test_sketch_round_trip_keeps_quantiles():
    from gleitzeit_jupyter.hub.metrics import (
        RELATIVE_ACCURACY,
        InstanceMetrics,
        export_sketch,
        import_sketch,
    )

    m = InstanceMetrics()
    for k in range(1, 2001):
        m.record(float(k % 500) + 0.5, ok=True)
    m.record(0.0, ok=True)  # the zero bucket
    data = export_sketch(m.all_time)
    back = import_sketch(data)
    assert back.count == m.all_time.count
    assert back.sum == pytest.approx(m.all_time.sum, rel=RELATIVE_ACCURACY)
    for q in (0.01, 0.5, 0.95, 0.99):
        assert back.get_quantile_value(q) == pytest.approx(m.all_time.get_quantile_value(q))


async def test_loading_a_save_that_already_contains_this_pools_counts_does_not_double_them(
    tmp_path,
):
    mine, theirs = tmp_path / "mine.sqlite", tmp_path / "theirs.sqlite"
    async with _pool("a") as p, _pool("a") as q:
        await _drive(p, 10)
        await store.save_pool(p, mine)
        await store.load_pool(q, mine)  # q now holds p's 10 calls ...
        await _drive(q, 2)
        await store.save_pool(q, theirs)  # ... and saves 12, 10 of them p's
        report = await store.load_pool(p, theirs)
        a = p.get_instance("a").metrics
        assert a.requests <= 12  # never p's own 10 counted a second time
        assert "a" in report.overlapping and "not merged" in str(report)
        async with _pool("a") as r:  # a fresh pool loading both saves
            await store.load_pool(r, mine)
            await store.load_pool(r, theirs)
            assert r.get_instance("a").metrics.requests <= 12
