"""Retries: calls that never reached an instance move for free, a burst of failures on one
dead member of a healthy pool loses nothing, a dead pool is not multiplied."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import res

from gleitzeit_jupyter.hub import ResourceFailed, ResourceStatus
from gleitzeit_jupyter.hub.retry import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_the_reserve_then_a_share_of_recent_calls():
    clock = Clock()
    b = RetryBudget(ratio=0.2, min_per_s=1.0, ttl=10.0, clock=clock)
    assert sum(b.try_withdraw() for _ in range(50)) == 10  # reserve: 1/s over 10 s
    for _ in range(100):
        b.deposit()
    assert sum(b.try_withdraw() for _ in range(50)) == 20  # 20 % of 100 calls


def test_budget_deposits_and_withdrawals_expire_after_the_ttl():
    clock = Clock()
    b = RetryBudget(ratio=0.5, min_per_s=0.0, ttl=10.0, clock=clock)
    for _ in range(10):
        b.deposit()
    assert b.balance == pytest.approx(5.0)
    while b.try_withdraw():
        pass
    clock.now += 11.0
    assert b.balance == pytest.approx(0.0)  # old deposits and withdrawals both expired
    b.deposit()
    b.deposit()
    assert b.balance == pytest.approx(1.0)


async def test_a_refused_call_moves_on_without_spending_the_budget(pool):
    p = await pool(["a", "b"], retries=0, min_retries_per_s=0.0, retry_budget_ratio=0.0)
    res(p, "a").refuse = True
    results = await asyncio.gather(*(p.execute("m", {"value": k}) for k in range(20)))
    assert {r["instance"] for r in results} == {"b"}
    assert p.calls.budget.balance == 0.0  # nothing was withdrawn, nothing was available


async def test_a_refused_connection_ejects_the_instance_at_once(pool):
    # round robin: a must be tried (least_loaded breaks ties at random and may never pick it)
    p = await pool(["a", "b"], strategy="round_robin")
    res(p, "a").refuse = True
    for _ in range(4):
        await p.execute("m", {})
    assert p.get_instance("a").status is ResourceStatus.UNHEALTHY
    assert res(p, "a").refused == 1  # ejected after the first refusal, not tried again


async def test_in_flight_burst_on_one_dead_member_of_a_busy_pool_loses_nothing(pool):
    # 300 calls at once over three instances; one dies with its calls in flight. The old
    # token bucket (+0.2 a call, -1 a retry) ran dry on such a burst and lost calls.
    p = await pool(["a", "b", "c"], retries=2, strategy="round_robin")
    gate = asyncio.Event()
    calls = [asyncio.create_task(p.execute("m", {"value": k, "until": gate})) for k in range(300)]
    await asyncio.sleep(0.01)
    assert res(p, "b").active > 50
    res(p, "b").fail = True  # the in-flight calls on b all fail once they return
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    lost = [r for r in results if isinstance(r, BaseException)]
    assert not lost, lost[:3]


async def test_retry_budget_stops_a_dead_pool_from_multiplying_load(pool):
    n = 300
    p = await pool(
        ["a", "b", "c"],
        retries=2,
        retry_budget_ratio=0.2,
        min_retries_per_s=1.0,
        breaker_failure_threshold=10_000,  # the budget alone limits the load here
    )
    for r in p.resources.values():
        r.alive = False
    for _ in range(n):
        with pytest.raises(ResourceFailed):
            await p.execute("m", {})
    made = sum(r.calls for r in p.resources.values())
    # without a budget: 3 attempts per call (900); with it: the first attempts, plus the
    # reserve (1/s over 10 s), plus 20 % of the calls
    assert n < made <= n + 10 + 0.2 * n + 1
