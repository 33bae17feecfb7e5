"""Seeded fault schedules over the in-memory pool, in virtual time, with the pool's invariants
checked after every step (see gleitzeit_jupyter/testing/simulation.py).

GLEITZEIT_SIM_SCHEDULES=100000 runs more schedules; GLEITZEIT_SIM_SEED=N replays one. A
failing schedule names its seed in the error.
"""

from __future__ import annotations

import os

import pytest

from gleitzeit_jupyter.hub import CircuitState, breaker, calls
from gleitzeit_jupyter.testing.simulation import InvariantViolation, run_schedule

SCHEDULES = int(os.environ.get("GLEITZEIT_SIM_SCHEDULES", "2000"))
SEED = os.environ.get("GLEITZEIT_SIM_SEED")
CHUNKS = 8


def _run(seeds: range) -> None:
    for seed in seeds:
        try:
            run_schedule(seed)
        except InvariantViolation:
            raise
        except Exception as exc:  # a crash is a violation too, and needs its seed
            raise InvariantViolation(f"seed {seed}: {exc!r}") from exc


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_fault_schedules_keep_the_pool_invariants(chunk: int) -> None:
    if SEED is not None:  # replaying one schedule: the first chunk runs it, the rest nothing
        _run(range(int(SEED), int(SEED) + 1) if chunk == 0 else range(0))
        return
    per = -(-SCHEDULES // CHUNKS)
    _run(range(chunk * per, min(SCHEDULES, (chunk + 1) * per)))


def test_the_simulator_catches_a_pool_that_loses_refused_calls(monkeypatch) -> None:
    # A simulator that cannot fail proves nothing: with free requeues switched off, the
    # schedules must find calls lost while another instance could have served them.
    real = calls.CallPath._again

    def no_requeue(self, error, pin, retries, deadline):
        return False if not error.started else real(self, error, pin, retries, deadline)

    monkeypatch.setattr(calls.CallPath, "_again", no_requeue)
    with pytest.raises(InvariantViolation, match=r"seed \d+.*lost"):
        _run(range(200))


def test_the_simulator_counts_half_open_calls_at_the_resource_not_at_the_breaker(
    monkeypatch,
) -> None:
    # A route that never took a trial slot leaves the breaker's own count at zero: the
    # simulator must still see more calls running on a half-open instance than allowed.
    real = breaker.CircuitBreaker.admit

    def no_slot(self):
        return "call" if self.state is CircuitState.HALF_OPEN else real(self)

    monkeypatch.setattr(breaker.CircuitBreaker, "admit", no_slot)
    monkeypatch.setattr(breaker.CircuitBreaker, "can_admit", lambda self: True)
    monkeypatch.setattr(calls, "_HALF_OPEN", object())  # the route's own trial check, off
    with pytest.raises(InvariantViolation, match=r"seed \d+.*half-open"):
        _run(range(2000))
