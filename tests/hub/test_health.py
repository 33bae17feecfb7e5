"""Issue 2, point 3: health loop, thresholds, DEGRADED, concurrent checks with a timeout each,
status events."""

from __future__ import annotations

import asyncio

from hub_helpers import Recorder, res, wait_until

from gleitzeit_jupyter.hub import ResourceStatus
from gleitzeit_jupyter.hub.health import HealthTracker
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryResource

H, D, U = ResourceStatus.HEALTHY, ResourceStatus.DEGRADED, ResourceStatus.UNHEALTHY


async def test_unhealthy_after_threshold_failures_and_healthy_after_threshold_successes(pool):
    p = await pool(["a", "b"], unhealthy_threshold=3, healthy_threshold=2)
    rec = Recorder()
    p.subscribe(rec)
    a = p.get_instance("a")
    res(p, "a").healthy = False
    seen = []
    for _ in range(3):
        await p.check_health_now()
        seen.append(a.status)
    assert seen == [D, D, U]  # failing some: degraded; threshold reached: unhealthy
    res(p, "a").healthy = True
    await p.check_health_now()
    assert a.status is U  # one good probe is not enough
    await p.check_health_now()
    assert a.status is H
    assert rec.of("status", "a") == [
        ("healthy", "degraded"),
        ("degraded", "unhealthy"),
        ("unhealthy", "healthy"),
    ]
    assert p.get_instance("b").status is H
    assert rec.of("status", "b") == []


async def test_one_failed_probe_between_successes_does_not_eject(pool):
    p = await pool(["a"], unhealthy_threshold=2)
    a = p.get_instance("a")
    for ok in (False, True, False, True, False, True):
        res(p, "a").healthy = ok
        await p.check_health_now()
        assert a.status is not U


async def test_background_loop_checks_every_interval_and_ejects(pool):
    p = await pool(["a", "b"], health_check_interval=0.02, unhealthy_threshold=2)
    await wait_until(lambda: res(p, "a").health_checks >= 4)
    res(p, "a").alive = False
    await wait_until(lambda: p.get_instance("a").status is U)
    # traffic avoids the unhealthy instance
    results = [await p.execute("m", {}) for _ in range(10)]
    assert {r["instance"] for r in results} == {"b"}
    res(p, "a").alive = True
    await wait_until(lambda: p.get_instance("a").status is H)


async def test_checks_run_concurrently(pool):
    p = await pool([MemoryConfig(f"i{k}") for k in range(6)])
    for r in p.resources.values():
        r.health_latency = 0.05
    p.health_max_active = 0
    await p.check_health_now()
    assert p.health_max_active == 6


async def test_a_hanging_check_times_out_and_does_not_stall_the_others(pool):
    p = await pool(
        ["hangs", "b", "c"],
        health_check_interval=0.02,
        health_check_timeout=0.05,
        unhealthy_threshold=2,
    )
    res(p, "hangs").health_hang = True
    start = {n: res(p, n).health_checks for n in ("b", "c")}
    await wait_until(lambda: p.get_instance("hangs").status is U)
    await wait_until(lambda: all(res(p, n).health_checks >= start[n] + 3 for n in ("b", "c")))
    assert p.get_instance("b").status is H and p.get_instance("c").status is H
    assert "no answer within" in (p._health["hangs"].last_error or "")
    # one round returns although a check never answers
    await asyncio.wait_for(p.check_health_now(), 2.0)


async def test_a_raising_check_counts_as_a_failure(pool):
    class Boom(Exception):
        pass

    p = await pool(["a"], unhealthy_threshold=1)

    async def raising(instance):
        raise Boom("probe exploded")

    p.check_resource_health = raising
    await p.check_health_now()
    assert p.get_instance("a").status is U
    assert p._health["a"].last_error == "probe exploded"


async def test_degraded_when_checks_are_slow(pool):
    p = await pool(["a"], degraded_latency_ms=20)
    res(p, "a").health_latency = 0.06
    await p.check_health_now()
    assert p.get_instance("a").status is D
    res(p, "a").health_latency = 0.0
    await p.check_health_now()
    assert p.get_instance("a").status is H


async def test_degraded_when_recent_calls_mostly_fail(pool):
    p = await pool(["a", "b"], retries=0)
    res(p, "a").fail_every = 2  # every other call fails; the breaker never sees 5 in a row
    for _ in range(20):
        try:
            await p.execute("m", {}, instance="a")
        except Exception:
            pass
    await p.check_health_now()
    assert p.get_instance("a").status is D
    assert p.get_instance("b").status is H
    # degraded instances still take traffic
    res(p, "a").fail_every = 0
    assert {(await p.execute("m", {}))["instance"] for _ in range(20)} == {"a", "b"}


async def test_a_new_instance_that_fails_its_first_check_starts_unhealthy(pool):
    p = await pool(["a"])
    p.resources["b"] = MemoryResource(MemoryConfig("b"), healthy=False)
    inst = await p.add_resource(MemoryConfig("b"))
    assert inst.status is U


def test_tracker_thresholds_directly():
    t = HealthTracker(unhealthy_threshold=2, healthy_threshold=3)
    s = ResourceStatus.STARTING
    s = t.observe(s, True)
    assert s is H
    s = t.observe(s, False)
    assert s is D
    s = t.observe(s, False)
    assert s is U
    for expected in (U, U, H):
        s = t.observe(s, True)
        assert s is expected
    # draining / stopped are never overridden by a probe
    assert t.observe(ResourceStatus.DRAINING, True) is ResourceStatus.DRAINING
    assert t.observe(ResourceStatus.STOPPED, False) is ResourceStatus.STOPPED


def test_documented_defaults():
    from gleitzeit_jupyter.testing.memory import MemoryProvider

    p = MemoryProvider()
    assert p.health_check_interval == 5.0
    assert (p.unhealthy_threshold, p.healthy_threshold) == (3, 2)


async def test_status_says_why_the_health_check_fails_and_forgets_it_once_it_passes(pool):
    p = await pool(["a"], health_check_timeout=0.05, unhealthy_threshold=1)
    p.resources["a"].alive = False
    await p.check_health_now()
    row = p.status()["instances"][0]
    assert row["health"] == "unhealthy" and row["health_error"] == "health check failed"
    p.resources["a"].alive = True
    p.resources["a"].hang = True
    await p.check_health_now()
    assert p.status()["instances"][0]["health_error"] == "no answer within 0.05 s"
    p.resources["a"].hang = False
    await p.check_health_now()
    assert p.status()["instances"][0]["health_error"] is None
