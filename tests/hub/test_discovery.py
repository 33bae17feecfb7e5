"""Issue 2, point 9: auto-discovery at start and every ``discovery_interval``: new resources are
added, vanished ones retired (drained first); explicit ones are never retired."""

from __future__ import annotations

import asyncio

from hub_helpers import Recorder, cfgs, res, wait_until

from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


def ids(p) -> set[str]:
    return {i.id for i in p.instances}


async def test_discovery_runs_at_start():
    async with MemoryProvider(
        cfgs("explicit"),
        enable_auto_discovery=True,
        discoverable=cfgs("d1", "d2"),
        health_check_interval=60,
        discovery_interval=60,
    ) as p:
        assert ids(p) == {"explicit", "d1", "d2"}
        assert {i.id: i.origin for i in p.instances} == {
            "explicit": "explicit",
            "d1": "discovered",
            "d2": "discovered",
        }


async def test_discovery_is_off_unless_enabled():
    async with MemoryProvider(
        cfgs("a"), discoverable=cfgs("d1"), health_check_interval=60, discovery_interval=0.02
    ) as p:
        await asyncio.sleep(0.1)
        assert ids(p) == {"a"}


async def test_loop_adds_new_and_retires_vanished_resources():
    rec = Recorder()
    p = MemoryProvider(
        cfgs("explicit"),
        enable_auto_discovery=True,
        discoverable=cfgs("d1", "d2"),
        health_check_interval=60,
        discovery_interval=0.02,
    )
    p.subscribe(rec)
    async with p:
        p.discoverable = cfgs("d2", "d3")
        await wait_until(lambda: ids(p) == {"explicit", "d2", "d3"})
        assert res(p, "d1").destroyed
        assert rec.of("membership", "d3") == [(None, "added")]
        assert rec.of("membership", "d1") == [(None, "added"), ("added", "removed")]
        # an explicit resource is never retired by discovery
        p.discoverable = []
        await wait_until(lambda: ids(p) == {"explicit"})
        await asyncio.sleep(0.06)
        assert ids(p) == {"explicit"}
        # a rediscovered resource comes back
        p.discoverable = cfgs("d1")
        await wait_until(lambda: ids(p) == {"explicit", "d1"})
        assert (await p.execute("m", {}, instance="d1"))["instance"] == "d1"


async def test_a_vanished_resource_is_drained_before_it_is_removed():
    async with MemoryProvider(
        enable_auto_discovery=True,
        discoverable=cfgs("d1", "d2"),
        health_check_interval=60,
        discovery_interval=0.02,
    ) as p:
        slow = asyncio.create_task(p.execute("m", {"latency": 0.15, "value": 7}, instance="d1"))
        await wait_until(lambda: p.get_instance("d1").in_flight == 1)
        p.discoverable = cfgs("d2")
        await asyncio.sleep(0.05)
        assert "d1" in ids(p) and not res(p, "d1").destroyed  # draining, not killed
        assert (await slow)["echo"] == 7
        await wait_until(lambda: ids(p) == {"d2"})
        assert res(p, "d1").destroyed


async def test_a_failing_discovery_does_not_stop_the_loop_or_retire_anything():
    class Flaky(MemoryProvider):
        broken = False
        rounds = 0

        async def discover_resources(self):
            self.rounds += 1
            if self.broken:
                raise ConnectionError("registry unreachable")
            return await super().discover_resources()

    async with Flaky(
        enable_auto_discovery=True,
        discoverable=cfgs("d1"),
        health_check_interval=60,
        discovery_interval=0.02,
    ) as p:
        p.broken = True
        start = p.rounds
        await wait_until(lambda: p.rounds >= start + 3)
        assert ids(p) == {"d1"}  # an error is not "everything vanished"
        p.broken = False
        p.discoverable = cfgs("d1", "d2")
        await wait_until(lambda: ids(p) == {"d1", "d2"})


async def test_discover_now_is_idempotent():
    async with MemoryProvider(
        enable_auto_discovery=True,
        discoverable=cfgs("d1", "d2"),
        health_check_interval=60,
        discovery_interval=60,
    ) as p:
        await p.discover_now()
        await p.discover_now()
        assert p.created == 2 and ids(p) == {"d1", "d2"}
        p.discoverable.append(MemoryConfig("d3"))
        await p.discover_now()
        assert p.created == 3
