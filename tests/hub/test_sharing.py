"""Issue 2, points 10 and 11: sharing one saturated pool fairly across tenants, a bounded
queue, and priorities within a tenant's fair share."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hub_helpers import res, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_jupyter.hub import ExecutionTimeout, NoResourceAvailable
from gleitzeit_jupyter.hub.queueing import FairQueue
from gleitzeit_jupyter.testing.memory import MemoryConfig


class Saturated:
    """A pool of one single-slot instance, held busy by a 'gate' call until ``open()``."""

    def __init__(self, p, gate, release):
        self.p, self.gate, self._release = p, gate, release

    async def open(self):
        self._release.set()
        await self.gate


async def saturated(pool, **options):
    p = await pool([MemoryConfig("only", capacity=1)], **options)
    release = asyncio.Event()
    gate = asyncio.create_task(
        p.execute("m", {"until": release, "tenant": "gate", "value": "gate"})
    )
    await wait_until(lambda: p.get_instance("only").in_flight == 1)
    return p, Saturated(p, gate, release)


def served_order(p) -> list:
    return [entry.get("value") for entry in res(p, "only").log]


async def enqueue(p, n_before: int, **params):
    task = asyncio.create_task(p.execute("m", params))
    await wait_until(lambda: p.queue_length == n_before + 1)
    return task


# ---- fairness -------------------------------------------------------------------------
async def test_a_batch_of_1000_cannot_starve_another_tenants_single_call(pool):
    p, gate = await saturated(pool, enable_sharing=True, max_queue=5000)
    batch = [
        asyncio.create_task(p.execute("m", {"tenant": "batch", "value": ("batch", k)}))
        for k in range(1000)
    ]
    await wait_until(lambda: p.queue_length == 1000)
    single = await enqueue(p, 1000, tenant="alice", value="alice")
    assert p.status()["queue"] == {"waiting": 1001, "tenants": 2}
    await gate.open()
    await asyncio.gather(single, *batch)
    order = served_order(p)
    assert len(order) == 1002
    position = order.index("alice")
    assert position <= 3  # after the gate and at most a couple of the batch
    # the batch itself is served in order
    assert [v[1] for v in order if isinstance(v, tuple)] == list(range(1000))


async def test_without_sharing_the_queue_is_plain_fifo(pool):
    # the counterpart of the test above: the single call waits behind the whole batch
    p, gate = await saturated(pool, enable_sharing=False)
    batch = [
        asyncio.create_task(p.execute("m", {"tenant": "batch", "value": k})) for k in range(50)
    ]
    await wait_until(lambda: p.queue_length == 50)
    single = await enqueue(p, 50, tenant="alice", value="alice")
    await gate.open()
    await asyncio.gather(single, *batch)
    assert served_order(p).index("alice") == 51


async def test_tenants_are_served_round_robin(pool):
    p, gate = await saturated(pool, enable_sharing=True)
    tasks = []
    for tenant in ("a", "b", "c"):
        for _ in range(6):
            tasks.append(asyncio.create_task(p.execute("m", {"tenant": tenant, "value": tenant})))
    await wait_until(lambda: p.queue_length == 18)
    await gate.open()
    await asyncio.gather(*tasks)
    order = served_order(p)[1:]  # after the gate
    for k in range(0, 18, 3):
        assert sorted(order[k : k + 3]) == ["a", "b", "c"]


async def test_queue_is_bounded_by_max_queue(pool):
    p, gate = await saturated(pool, enable_sharing=True, max_queue=5)
    waiting = [
        asyncio.create_task(p.execute("m", {"tenant": f"t{k % 2}", "value": k})) for k in range(5)
    ]
    await wait_until(lambda: p.queue_length == 5)
    for _ in range(3):
        with pytest.raises(NoResourceAvailable, match="saturated") as info:
            await p.execute("m", {"tenant": "late"})
        assert "max_queue" in str(info.value)
    assert p.queue_length == 5
    assert p.status()["queue"] == {"waiting": 5, "tenants": 2}
    await gate.open()
    await asyncio.gather(*waiting)
    assert p.queue_length == 0
    assert (await p.execute("m", {"tenant": "late", "value": "late"}))["echo"] == "late"


async def test_a_queued_call_times_out_and_leaves_the_queue(pool):
    p, gate = await saturated(pool, enable_sharing=True)
    with pytest.raises(ExecutionTimeout, match="became free"):
        await p.execute("m", {"tenant": "x"}, timeout=0.02)
    assert p.queue_length == 0
    await gate.open()


async def test_a_cancelled_waiter_leaves_the_queue_and_others_proceed(pool):
    p, gate = await saturated(pool, enable_sharing=True)
    first = await enqueue(p, 0, tenant="a", value="first")
    second = await enqueue(p, 1, tenant="b", value="second")
    first.cancel()
    await asyncio.sleep(0)
    assert p.queue_length == 1
    await gate.open()
    assert (await second)["echo"] == "second"
    assert "first" not in served_order(p)


# ---- priorities -----------------------------------------------------------------------
@pytest.mark.parametrize("sharing", [False, True])
async def test_higher_priority_is_served_first_under_saturation(pool, sharing):
    p, gate = await saturated(pool, enable_sharing=sharing)
    tasks = []
    for n, (prio, tag) in enumerate(
        [(0, "p0a"), (5, "p5a"), (1, "p1"), (9, "p9"), (0, "p0b"), (5, "p5b")]
    ):
        tasks.append(await enqueue(p, n, tenant="t", priority=prio, value=tag))
    await gate.open()
    await asyncio.gather(*tasks)
    assert served_order(p)[1:] == ["p9", "p5a", "p5b", "p1", "p0a", "p0b"]


async def test_priority_works_within_a_tenants_fair_share(pool):
    p, gate = await saturated(pool, enable_sharing=True)
    tasks = [await enqueue(p, k, tenant="heavy", priority=9, value=f"heavy-{k}") for k in range(10)]
    tasks.append(await enqueue(p, 10, tenant="light", priority=0, value="light"))
    tasks.append(await enqueue(p, 11, tenant="heavy", priority=20, value="urgent"))
    await gate.open()
    await asyncio.gather(*tasks)
    order = served_order(p)[1:]
    # the heavy tenant's urgent call jumps its own queue, but not the other tenant's turn
    assert order.index("urgent") <= 2
    assert order.index("light") <= 2
    assert order.index("urgent") < order.index("heavy-1")


async def test_priority_does_not_matter_without_saturation(pool):
    p = await pool(["a", "b"])
    results = await asyncio.gather(
        *(p.execute("m", {"priority": k % 3, "value": k}) for k in range(20))
    )
    assert [r["echo"] for r in results] == list(range(20))
    assert p.queue_length == 0


# ---- the queue itself (hypothesis) ------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(min_value=0, max_value=3)),
        min_size=1,
        max_size=40,
    )
)
def test_fair_queue_serves_tenants_evenly_and_priorities_in_order(pushes):
    async def scenario():
        q = FairQueue(max_queue=1000, fair=True)
        room = [0]

        def take():  # one free slot per dispatch: who gets it shows the queue's order
            if room[0] <= 0:
                return None
            room[0] -= 1
            return "slot"

        futures = [
            (tenant, prio, k, q.push(tenant, prio, take).future)
            for k, (tenant, prio) in enumerate(pushes)
        ]
        order = []
        while len(q):
            room[0] = 1
            q.dispatch(lambda: room[0] > 0)
            for item in futures:
                if item[3].done() and item not in order:
                    order.append(item)
        return order

    order = asyncio.run(scenario())
    assert len(order) == len(pushes)
    total = Counter(t for t, _ in pushes)
    served: Counter = Counter()
    for tenant, _, _, _ in order:
        served[tenant] += 1
        # fairness: among tenants that still wait, nobody is more than one call ahead
        open_ = [t for t in total if served[t] < total[t]]
        if open_:
            assert max(served[t] for t in open_) - min(served[t] for t in open_) <= 1
    for tenant in total:
        mine = [(prio, k) for t, prio, k, _ in order if t == tenant]
        # within a tenant: higher priority first, arrival order among equals
        assert mine == sorted(mine, key=lambda pk: (-pk[0], pk[1]))


async def test_a_priority_that_is_not_an_integer_is_a_user_error(pool):
    from gleitzeit_jupyter.hub import UserError

    p = await pool(["a"])
    with pytest.raises(UserError, match="priority must be an integer"):
        await p.execute("m", {"priority": "high"})  # also when the pool is not saturated
    assert res(p, "a").calls == 0
    assert (await p.execute("m", {"priority": "3"}))["instance"] == "a"
