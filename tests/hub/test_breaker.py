"""Issue 2, point 6: the per-instance circuit breaker, on its own (fake clock, hypothesis state
machine) and inside the provider."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import Recorder, res, wait_until
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gleitzeit_jupyter.hub import CircuitBreaker, CircuitState, ResourceFailed
from gleitzeit_jupyter.testing.memory import MemoryConfig

C, OP, HO = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw):
    clock = Clock()
    changes: list[tuple[CircuitState, CircuitState]] = []
    kw.setdefault("on_change", lambda old, new: changes.append((old, new)))
    return CircuitBreaker(clock=clock, **kw), clock, changes


# ---- unit -------------------------------------------------------------------------------
def test_opens_after_threshold_consecutive_failures_only():
    b, _, changes = make(failure_threshold=3)
    for _ in range(2):
        b.record_failure()
    b.record_success()  # resets the run
    for _ in range(2):
        b.record_failure()
    assert b.state is C
    b.record_failure()
    assert b.state is OP
    assert changes == [(C, OP)]


def test_open_rejects_until_the_recovery_timeout_then_half_open():
    b, clock, _ = make(failure_threshold=1, recovery_timeout=10)
    b.record_failure()
    assert not b.can_admit() and not b.admit()
    clock.now += 9.9
    assert b.state is OP and not b.admit()
    clock.now += 0.1
    assert b.state is HO


@pytest.mark.parametrize("half_open_max", [1, 2, 5])
def test_half_open_admits_at_most_half_open_max_concurrent_trials(half_open_max):
    b, clock, _ = make(failure_threshold=1, recovery_timeout=1, half_open_max=half_open_max)
    b.record_failure()
    clock.now += 1
    admitted = [b.admit() for _ in range(half_open_max + 3)]
    assert admitted == ["trial"] * half_open_max + [None] * 3
    assert not b.can_admit()
    b.record_neutral()  # an ordinary call ending (admitted while closed) frees no slot
    assert not b.can_admit()
    b.record_neutral(trial=True)  # a trial ended without a verdict: its slot is free again
    assert b.state is HO and b.admit() == "trial"


def test_trial_success_closes_and_resets_the_timeout():
    b, clock, changes = make(failure_threshold=1, recovery_timeout=2)
    b.record_failure()
    clock.now += 2
    assert b.admit() == "trial"
    b.record_failure(trial=True)  # re-open: 4 s now
    clock.now += 4
    assert b.admit() == "trial"
    b.record_success(trial=True)
    assert b.state is C and b.recovery_timeout == 2
    assert changes == [(C, OP), (OP, HO), (HO, OP), (OP, HO), (HO, C)]


def test_trial_failure_reopens_with_a_growing_capped_timeout():
    b, clock, _ = make(
        failure_threshold=1, recovery_timeout=1, backoff=2.0, max_recovery_timeout=10
    )
    b.record_failure()
    timeouts = []
    for _ in range(6):
        clock.now += b.recovery_timeout
        assert b.state is HO and b.admit() == "trial"
        b.record_failure(trial=True)
        assert b.state is OP
        timeouts.append(b.recovery_timeout)
        clock.now += b.recovery_timeout - 0.01
        assert b.state is OP  # not a moment early
    assert timeouts == [2, 4, 8, 10, 10, 10]


def test_rejected_calls_and_neutral_outcomes_do_not_count():
    b, clock, _ = make(failure_threshold=2, recovery_timeout=5)
    b.record_failure()
    for _ in range(10):
        b.record_neutral()  # user errors, cancellations
    assert b.state is C and b.consecutive_failures == 1
    b.record_failure()
    opened = b.times_opened
    for _ in range(50):
        assert not b.admit()  # rejected: no failure, no change
    assert b.times_opened == opened and b.state is OP
    clock.now += 5
    assert b.state is HO


def test_reset_and_trip():
    b, _, _ = make(failure_threshold=1, recovery_timeout=100)
    b.trip()
    assert b.state is OP
    b.reset()
    assert b.state is C and b.admit() == "call"


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(half_open_max=0)


# ---- hypothesis state machine ---------------------------------------------------------
class BreakerMachine(RuleBasedStateMachine):
    """Drive a breaker with random admissions, outcomes and clock jumps; check it against a
    small model of the documented behaviour."""

    def __init__(self) -> None:
        super().__init__()
        self.threshold = 3
        self.base = 5.0
        self.max_timeout = 40.0
        self.half_open_max = 2
        self.clock = Clock()
        self.transitions: list[tuple[CircuitState, CircuitState]] = []
        self.b = CircuitBreaker(
            self.threshold,
            self.base,
            self.half_open_max,
            backoff=2.0,
            max_recovery_timeout=self.max_timeout,
            clock=self.clock,
            on_change=lambda old, new: self.transitions.append((old, new)),
        )
        self.pending: list[str] = []  # admitted calls without an outcome: "call" / "trial"
        self.run = 0  # consecutive failures since the last success / open

    @rule(dt=st.floats(min_value=0, max_value=60))
    def advance(self, dt):
        self.clock.now += dt

    @rule()
    def admit(self):
        state = self.b.state
        trials_before = self.b.trials
        got = self.b.admit()
        if state is C:
            assert got == "call"
        elif state is OP:
            assert got is None  # rejected, and counts for nothing
            assert self.b.state is OP and self.b.trials == trials_before
        else:
            assert (got == "trial") == (trials_before < self.half_open_max)
            assert got in ("trial", None)
        if got is not None:
            self.pending.append(got)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "neutral"]))
    def finish(self, data, outcome):
        kind = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        trial = kind == "trial"
        before = self.b._state
        timeout_before = self.b.recovery_timeout
        if outcome == "success":
            self.b.record_success(trial)
            self.run = 0
            assert self.b.state is C
            assert self.b.recovery_timeout == self.base
        elif outcome == "failure":
            self.run += 1
            self.b.record_failure(trial)
            if before is HO:
                assert self.b._state is OP
                assert self.b.recovery_timeout == min(timeout_before * 2, self.max_timeout)
            elif before is C:
                assert (self.b._state is OP) == (self.run >= self.threshold)
            if self.b._state is OP and before is not OP:
                self.run = 0
        else:
            self.b.record_neutral(trial)
            assert self.b._state is before  # neutral never changes the state

    @invariant()
    def consistent(self):
        b = self.b
        # exact accounting: the breaker's trial count is the trials still running, and
        # never more than half_open_max of them run at once, whatever the interleaving
        assert b.trials == self.pending.count("trial")
        assert b.trials <= self.half_open_max
        assert self.base <= b.recovery_timeout <= self.max_timeout
        state = b.state
        if state is OP:
            assert b.opened_at is not None
            assert self.clock.now - b.opened_at < b.recovery_timeout
            assert not b.can_admit()
        if state is C:
            assert b.can_admit()
        # every transition is one the design allows
        allowed = {(C, OP), (OP, HO), (HO, OP), (HO, C), (OP, C)}
        assert set(self.transitions) <= allowed


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerStateMachine = BreakerMachine.TestCase


# ---- inside the provider --------------------------------------------------------------
async def test_breaker_opens_and_the_balancer_skips_the_instance(pool):
    p = await pool(
        ["flaky", "ok"],
        strategy="round_robin",
        breaker_failure_threshold=3,
        breaker_recovery_timeout=60,
    )
    res(p, "flaky").fail = True
    for _ in range(12):
        await p.execute("m", {})  # served by "ok" after failover
    flaky = p.get_instance("flaky")
    assert flaky.breaker_state is OP
    assert res(p, "flaky").calls == 3  # no calls after it opened
    for _ in range(20):
        assert (await p.execute("m", {}))["instance"] == "ok"
    assert res(p, "flaky").calls == 3


async def test_breaker_recovers_through_half_open(pool):
    p = await pool(
        ["flaky", "ok"],
        strategy="round_robin",
        breaker_failure_threshold=2,
        breaker_recovery_timeout=0.05,
    )
    rec = Recorder()
    p.subscribe(rec)
    res(p, "flaky").fail = True
    for _ in range(6):
        await p.execute("m", {})
    assert p.get_instance("flaky").breaker_state is OP
    await asyncio.sleep(0.06)
    # still broken: the trial fails and the breaker re-opens for longer
    for _ in range(4):
        await p.execute("m", {})
    breaker = p.get_instance("flaky").breaker
    assert breaker.recovery_timeout == pytest.approx(0.1)
    res(p, "flaky").fail = False
    await asyncio.sleep(0.11)
    for _ in range(4):
        await p.execute("m", {})
    assert breaker.state is C and breaker.recovery_timeout == pytest.approx(0.05)
    assert rec.of("breaker", "flaky") == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_half_open_allows_only_half_open_max_concurrent_trials(pool):
    p = await pool(
        [MemoryConfig("recovering", latency=0.2), MemoryConfig("ok", latency=0.2)],
        strategy="round_robin",
        breaker_recovery_timeout=0.02,
        breaker_half_open_max=2,
    )
    p.get_instance("recovering").breaker.trip()
    await asyncio.sleep(0.03)
    assert p.get_instance("recovering").breaker_state is HO
    results = await asyncio.gather(*(p.execute("m", {}) for _ in range(20)))
    assert len(results) == 20
    assert res(p, "recovering").max_active == 2  # round robin would have sent it 10
    assert res(p, "recovering").calls == 2
    assert p.get_instance("recovering").breaker_state is C


async def test_user_errors_do_not_count_against_the_breaker(pool):
    p = await pool(["a"], breaker_failure_threshold=2)
    for _ in range(10):
        with pytest.raises(Exception, match="bad method"):
            await p.execute("bad", {})
    assert p.get_instance("a").breaker_state is C
    assert p.get_instance("a").breaker.consecutive_failures == 0


async def test_breaker_counts_only_infrastructure_failures_in_a_row(pool):
    p = await pool(["a"], breaker_failure_threshold=3, retries=0)
    r = res(p, "a")
    for _ in range(5):
        r.fail = True
        for _ in range(2):
            with pytest.raises(ResourceFailed):
                await p.execute("m", {})
        r.fail = False
        await p.execute("m", {})
    assert p.get_instance("a").breaker_state is C


async def test_reset_breaker_operator_control(pool):
    p = await pool(["a", "b"], breaker_recovery_timeout=60)
    p.get_instance("a").breaker.trip()
    assert {(await p.execute("m", {}))["instance"] for _ in range(10)} == {"b"}
    p.reset_breaker("a")
    assert p.get_instance("a").breaker_state is C
    assert "a" in {(await p.execute("m", {}, strategy="round_robin"))["instance"] for _ in range(4)}


async def test_a_straggler_from_before_the_breaker_opened_does_not_free_a_trial_slot(pool):
    # Regression: a call admitted while CLOSED that ended (here: cancelled) during HALF_OPEN
    # used to free the running trial's slot, letting a second trial in with half_open_max=1.
    p = await pool(["a", "b"], strategy="round_robin", breaker_recovery_timeout=0.02)
    hold_x, hold_trial = asyncio.Event(), asyncio.Event()
    straggler = asyncio.create_task(p.execute("m", {"until": hold_x}, instance="a"))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    breaker = p.get_instance("a").breaker
    breaker.trip()
    await asyncio.sleep(0.03)
    assert breaker.state is HO
    trial = asyncio.create_task(p.execute("m", {"until": hold_trial}, instance="a"))
    await wait_until(lambda: p.get_instance("a").in_flight == 2)
    assert breaker.trials == 1
    straggler.cancel()
    await asyncio.sleep(0)
    assert breaker.trials == 1  # still one trial running
    results = [await p.execute("m", {}) for _ in range(10)]
    assert {r["instance"] for r in results} == {"b"}
    assert res(p, "a").calls == 2
    hold_trial.set()
    await trial
    assert breaker.state is C and breaker.trials == 0
