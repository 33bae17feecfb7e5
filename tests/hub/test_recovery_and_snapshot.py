"""Recovery by the hub's own health checks, and the one snapshot every view draws from:
availability that follows call failures, breaker counts that agree with the rows, labels
that tell instances apart, and errors that age."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import Recorder, res

from gleitzeit_jupyter.hub import CircuitState, ResourceFailed, ResourceStatus
from gleitzeit_jupyter.hub.snapshot import ERROR_FRESH_S, short_labels
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

C, OP, HO = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


async def _open(p, name: str, failures: int) -> None:
    res(p, name).fail = True
    for _ in range(failures):
        try:
            await p.execute("m", {}, instance=name)
        except Exception:
            pass
    assert p.get_instance(name).breaker.recorded_state is OP


async def test_a_recovered_instance_closes_its_breaker_without_user_traffic(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=2, breaker_recovery_timeout=0.05)
    rec = Recorder()
    p.subscribe(rec)
    await _open(p, "a", 2)
    calls = res(p, "a").calls
    res(p, "a").fail = False  # fixed; nobody calls it
    await asyncio.sleep(0.06)
    await p.check_health_now()
    assert p.get_instance("a").breaker_state is C
    assert res(p, "a").calls == calls  # the health check was the trial, not a call
    assert rec.of("breaker", "a") == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert p.status()["totals"]["available"] == 2


async def test_a_failing_check_on_a_half_open_breaker_reopens_it_for_longer(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=2, breaker_recovery_timeout=0.05)
    await _open(p, "a", 2)
    res(p, "a").healthy = False
    await asyncio.sleep(0.06)
    await p.check_health_now()
    breaker = p.get_instance("a").breaker
    assert breaker.recorded_state is OP
    assert breaker.recovery_timeout == pytest.approx(0.1)  # backed off like a failed trial


async def test_checks_passing_while_open_do_not_cut_the_recovery_timeout(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=2, breaker_recovery_timeout=30)
    await _open(p, "a", 2)
    res(p, "a").fail = False
    for _ in range(3):
        await p.check_health_now()
    assert p.get_instance("a").breaker.recorded_state is OP


async def test_a_check_does_not_take_the_trial_slot_a_call_holds(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=1, breaker_recovery_timeout=0.02)
    await _open(p, "a", 1)
    await asyncio.sleep(0.03)
    breaker = p.get_instance("a").breaker
    assert breaker.admit() == "trial"  # a call took the only slot
    await p.check_health_now()
    assert breaker.state is HO and breaker.trials == 1  # the check left it alone
    breaker.record_success(trial=True)
    assert breaker.state is C


async def test_a_refused_health_check_ejects_at_once() -> None:
    with OllamaStandIn(latency=0.01) as srv:
        async with OllamaProvider(
            hosts=[srv.url], auto_discover=False, health_check_interval=60, unhealthy_threshold=3
        ) as p:
            inst = p.instances[0]
            assert inst.status is ResourceStatus.HEALTHY
            srv.down()
            await p.check_health_now()
            # one refused check, not unhealthy_threshold of them
            assert inst.status is ResourceStatus.UNHEALTHY
            assert p.status()["totals"]["available"] == 0
            srv.up()
            await p.check_health_now()
            await p.check_health_now()
            assert inst.status is ResourceStatus.HEALTHY


async def test_availability_follows_call_failures_and_every_count_agrees(pool):
    p = await pool(["a", "b", "c"], breaker_failure_threshold=2, breaker_recovery_timeout=0.05)
    snap = p.status()
    assert snap["totals"]["available"] == 3
    res(p, "b").refuse = True
    await p.execute("m", {}, instance="a")
    try:
        await p.execute("m", {}, instance="b")
    except Exception:
        pass
    # passive health: one refused call, no health check in between
    await _open(p, "c", 2)
    snap = p.status()
    rows = {r["instance"]: r for r in snap["instances"]}
    assert [rows[k]["available"] for k in "abc"] == [True, False, False]
    assert snap["totals"]["available"] == 1
    assert snap["totals"]["open_breakers"] == 1 and snap["totals"]["half_open_breakers"] == 0
    await asyncio.sleep(0.06)
    snap = p.status()
    rows = {r["instance"]: r for r in snap["instances"]}
    assert rows["c"]["breaker"] == "half_open"
    assert snap["totals"]["open_breakers"] == 0 and snap["totals"]["half_open_breakers"] == 1
    assert snap["totals"]["available"] == sum(r["available"] for r in rows.values())
    p.drain("a")
    assert p.status()["totals"]["available"] == 1  # c: half-open admits its trial


def test_short_labels_keep_the_distinguishing_part():
    hosts = ["127.0.0.1:11434", "127.0.0.1:11435", "127.0.0.1:11436"]
    labels = short_labels(hosts)
    assert len(set(labels.values())) == 3
    assert labels == {h: "\u2026:" + h.split(":")[1] for h in hosts}
    assert short_labels(["gpu-a.lab:11434", "gpu-b.lab:11434"]) == {
        "gpu-a.lab:11434": "\u2026-a.lab:11434",
        "gpu-b.lab:11434": "\u2026-b.lab:11434",
    }
    assert short_labels(["sandbox-0", "sandbox-1"]) == {
        "sandbox-0": "\u2026-0",
        "sandbox-1": "\u2026-1",
    }
    assert short_labels(["only:1"]) == {"only:1": "only:1"}
    assert short_labels(["alpha", "beta"]) == {"alpha": "alpha", "beta": "beta"}
    # a shared prefix without a separator is not cut mid-word
    assert short_labels(["node10", "node11"]) == {"node10": "node10", "node11": "node11"}


async def test_errors_carry_their_age_and_stop_being_fresh(pool):
    p = await pool(["a"])
    res(p, "a").fail = True
    with pytest.raises(ResourceFailed):
        await p.execute("m", {})
    row = p.status()["instances"][0]
    assert row["last_error"] and row["error_fresh"] is True
    assert 0 <= row["last_error_age_s"] < ERROR_FRESH_S
    metrics = p.get_instance("a").metrics
    metrics.last_error_at -= ERROR_FRESH_S + 1  # as if it happened a while ago
    row = p.status()["instances"][0]
    assert row["last_error"] and row["error_fresh"] is False
    assert row["last_error_age_s"] >= ERROR_FRESH_S
