"""Issue 2, point 8: subscribe() delivers status, breaker, membership (and strategy, drain,
coalesced metrics) events."""

from __future__ import annotations

import asyncio
import json

import pytest
from hub_helpers import Recorder, res, wait_until

from gleitzeit_jupyter.hub import HubEvent, ResourceFailed
from gleitzeit_jupyter.hub import provider as provider_module
from gleitzeit_jupyter.hub.events import EVENT_KINDS
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


async def test_membership_events_for_start_add_remove_and_shutdown():
    rec = Recorder()
    p = MemoryProvider([MemoryConfig("a")], health_check_interval=60)
    p.subscribe(rec)
    await p.initialize()
    await p.add_resource(MemoryConfig("b"))
    await p.remove_resource("a")
    await p.shutdown()
    assert [(e.instance_id, e.new) for e in rec.events if e.kind == "membership"] == [
        ("a", "added"),
        ("b", "added"),
        ("a", "removed"),
        ("b", "removed"),
    ]
    assert all(e.provider == "memory" for e in rec.events)


async def test_status_events_follow_the_instance_lifecycle():
    rec = Recorder()
    p = MemoryProvider([MemoryConfig("a")], health_check_interval=60, unhealthy_threshold=1)
    p.subscribe(rec)
    await p.initialize()
    res(p, "a").alive = False
    await p.check_health_now()
    res(p, "a").alive = True
    await p.check_health_now()
    await p.check_health_now()
    await p.remove_resource("a")
    assert rec.of("status", "a") == [
        ("starting", "healthy"),
        ("healthy", "unhealthy"),
        ("unhealthy", "healthy"),
        ("healthy", "draining"),
        ("draining", "stopped"),
    ]
    await p.shutdown()


async def test_breaker_events(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=2, breaker_recovery_timeout=0.03)
    rec = Recorder()
    p.subscribe(rec)
    res(p, "a").fail = True
    for _ in range(2):
        with pytest.raises(ResourceFailed):
            await p.execute("m", {}, instance="a")
    assert rec.of("breaker", "a") == [("closed", "open")]
    res(p, "a").fail = False
    await asyncio.sleep(0.04)
    await p.execute("m", {}, instance="a")
    assert rec.of("breaker", "a") == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert rec.of("breaker", "b") == []


async def test_operator_controls_emit_events(pool):
    p = await pool(["a"], strategy="least_loaded")
    rec = Recorder()
    p.subscribe(rec)
    p.drain("a")
    p.enable("a")
    p.set_strategy("random")
    assert rec.of("status", "a") == [("enabled", "drained"), ("drained", "enabled")]
    assert rec.of("strategy") == [("least_loaded", "random")]


async def test_metrics_events_are_coalesced(pool, monkeypatch):
    monkeypatch.setattr(provider_module, "_TICK", 0.05)
    p = await pool(["a"])  # maintenance loop started with the short tick
    rec = Recorder()
    p.subscribe(rec)
    for _ in range(200):
        await p.execute("m", {})
    await wait_until(lambda: rec.of("metrics"))
    await asyncio.sleep(0.12)
    n = len(rec.of("metrics"))
    assert 1 <= n <= 10  # 200 calls, a handful of events (one per tick at most)
    await asyncio.sleep(0.12)
    assert len(rec.of("metrics")) == n  # quiet pool: no more


async def test_a_call_starting_and_one_queueing_are_metrics_events_too(pool, monkeypatch):
    # panels and the sidebar show in-flight and queued calls without polling the pool
    monkeypatch.setattr(provider_module, "_TICK", 0.05)
    p = await pool([MemoryConfig("a", capacity=1)])
    await asyncio.sleep(0.12)  # the start-up settles
    rec = Recorder()
    p.subscribe(rec)
    hold = asyncio.Event()
    running = asyncio.create_task(p.execute("m", {"until": hold}))
    await wait_until(lambda: rec.of("metrics"))  # started, not finished
    assert not running.done() and p.status()["totals"]["in_flight"] == 1
    n = len(rec.of("metrics"))
    queued = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: len(rec.of("metrics")) > n)  # one more call waiting
    assert p.queue_length == 1
    hold.set()
    await asyncio.gather(running, queued)


async def test_unsubscribe_and_a_failing_subscriber(pool):
    p = await pool(["a"])
    rec = Recorder()
    calls = []

    def broken(event: HubEvent) -> None:
        calls.append(event)
        raise RuntimeError("subscriber bug")

    p.subscribe(broken)
    unsubscribe = p.subscribe(rec)
    await p.add_resource(MemoryConfig("b"))  # the broken subscriber does not stop delivery
    assert rec.of("membership", "b") == [(None, "added")]
    assert calls
    unsubscribe()
    unsubscribe()  # idempotent
    await p.add_resource(MemoryConfig("c"))
    assert rec.of("membership", "c") == []
    assert (await p.execute("m", {}))["instance"] in {"a", "b", "c"}


async def test_events_are_json_able_and_of_known_kinds(pool):
    rec = Recorder()
    p = await pool(["a"], breaker_failure_threshold=1)
    p.subscribe(rec)
    await p.add_resource(MemoryConfig("b"))
    res(p, "b").fail = True
    with pytest.raises(ResourceFailed):
        await p.execute("m", {}, instance="b")
    p.set_strategy("random")
    await p.remove_resource("b")
    assert {e.kind for e in rec.events} == {"membership", "status", "breaker", "strategy"}
    for e in rec.events:
        assert e.kind in EVENT_KINDS
        d = json.loads(json.dumps(e.as_dict()))
        assert d["provider"] == "memory" and isinstance(d["at"], float)
