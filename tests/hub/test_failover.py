"""Issue 2, point 5: failover to a different instance, retry limit, retry budget, user errors
never retried, streams not retried after output."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import res

from gleitzeit_jupyter.hub import (
    CircuitState,
    ExecutionTimeout,
    HubError,
    ResourceFailed,
    UserError,
)


def calls(p) -> int:
    return sum(r.calls for r in p.resources.values())


async def test_infrastructure_error_is_retried_on_another_instance(pool):
    p = await pool(["dead", "ok"], strategy="round_robin")
    res(p, "dead").alive = False
    results = [await p.execute("m", {"value": k}) for k in range(10)]
    assert [r["echo"] for r in results] == list(range(10))
    assert {r["instance"] for r in results} == {"ok"}
    assert res(p, "dead").calls >= 1  # it was tried, then the call moved on


@pytest.mark.parametrize(
    "error",
    [ConnectionResetError("reset by peer"), RuntimeError("HTTP 503"), OSError("refused")],
)
async def test_any_other_exception_counts_as_resource_failed_and_is_retried(pool, error):
    p = await pool(["bad", "ok"], strategy="round_robin")
    res(p, "bad").error = error
    results = [await p.execute("m", {}) for _ in range(4)]
    assert {r["instance"] for r in results} == {"ok"}
    res(p, "ok").error = error
    with pytest.raises(ResourceFailed) as info:
        await p.execute("m", {})
    assert info.value.__cause__ is error or str(error) in str(info.value)


async def test_a_retry_never_goes_back_to_an_instance_already_tried(pool):
    p = await pool(["a", "b"], retries=5)
    for r in p.resources.values():
        r.fail = True
    with pytest.raises(ResourceFailed):
        await p.execute("m", {})
    assert res(p, "a").calls == 1 and res(p, "b").calls == 1  # not 6 attempts


@pytest.mark.parametrize("retries", [0, 1, 2, 3])
async def test_retries_limit_the_attempts(pool, retries):
    p = await pool([f"i{k}" for k in range(6)], retries=retries)
    for r in p.resources.values():
        r.fail = True
    with pytest.raises(ResourceFailed, match="is down"):
        await p.execute("m", {})
    assert calls(p) == retries + 1
    assert max(r.calls for r in p.resources.values()) == 1


async def test_user_error_is_never_retried_and_never_trips_the_breaker(pool):
    p = await pool(["a", "b", "c"], retries=3, breaker_failure_threshold=2)
    for _ in range(10):
        with pytest.raises(UserError, match="bad method"):
            await p.execute("bad", {})
    assert calls(p) == 10  # one attempt each
    assert all(i.breaker_state is CircuitState.CLOSED for i in p.instances)
    assert sum(i.metrics.failures for i in p.instances) == 0
    assert sum(i.metrics.user_errors for i in p.instances) == 10


async def test_validate_hook_rejects_before_any_instance_is_called(pool):
    p = await pool(["a"])

    def validate(method, params):
        if "prompt" not in params:
            raise UserError("missing prompt")

    p.validate = validate
    with pytest.raises(UserError, match="missing prompt"):
        await p.execute("m", {})
    assert calls(p) == 0


async def test_a_pinned_call_is_not_retried_elsewhere(pool):
    p = await pool(["a", "b"], retries=3)
    res(p, "a").fail = True
    with pytest.raises(ResourceFailed) as info:
        await p.execute("m", {}, instance="a")
    assert res(p, "b").calls == 0
    assert info.value.instance == "a"
    assert "(instance a)" in str(info.value) or "a is down" in str(info.value)


async def test_an_attempt_that_hangs_past_the_deadline_ends_the_call(pool):
    p = await pool(["hangs", "ok"], strategy="round_robin", call_timeout=0.05)
    res(p, "hangs").hang = True
    with pytest.raises(ExecutionTimeout, match="deadline"):
        await p.execute("m", {}, instance="hangs")
    assert p.get_instance("hangs").in_flight == 0
    assert p.get_instance("hangs").metrics.failures == 1
    assert (await p.execute("m", {}, instance="ok"))["instance"] == "ok"


async def test_error_is_one_line_naming_the_instance(pool):
    p = await pool(["a"], retries=0)
    res(p, "a").error = ConnectionRefusedError("connection refused")
    with pytest.raises(HubError) as info:
        await p.execute("m", {})
    text = str(info.value)
    assert "\n" not in text and "a" in text and "connection refused" in text


# ---- streaming ------------------------------------------------------------------------
async def collect(p, params, **kw):
    return [c async for c in p.stream("m", params, **kw)]


async def test_stream_is_retried_on_another_instance_before_any_output(pool):
    p = await pool(["dead", "ok"], strategy="round_robin")
    res(p, "dead").alive = False
    for _ in range(3):
        chunks = await collect(p, {"chunks": 4})
        assert [c["index"] for c in chunks] == [0, 1, 2, 3]
        assert {c["instance"] for c in chunks} == {"ok"}
    assert res(p, "dead").stream_calls >= 1


async def test_stream_is_not_retried_once_it_has_produced_output(pool):
    p = await pool(["a", "b"], retries=3)
    got = []
    with pytest.raises(ResourceFailed, match="mid-stream"):
        async for chunk in p.stream("m", {"chunks": 5, "fail_at": 2}):
            got.append(chunk["index"])
    assert got == [0, 1]  # the output already shown is not repeated from elsewhere
    assert sum(r.stream_calls for r in p.resources.values()) == 1
    assert sum(i.in_flight for i in p.instances) == 0
    assert sum(i.metrics.failures for i in p.instances) == 1


async def test_stream_consumer_stopping_early_releases_the_instance(pool):
    p = await pool(["a"], breaker_failure_threshold=1)
    agen = p.stream("m", {"chunks": 10})
    async for chunk in agen:
        if chunk["index"] == 1:
            break
    await agen.aclose()
    inst = p.get_instance("a")
    assert inst.in_flight == 0
    assert inst.breaker_state is CircuitState.CLOSED
    assert inst.metrics.failures == 0


async def test_stream_first_chunk_timeout_fails_over(pool):
    p = await pool(["slow", "fast"], strategy="round_robin")
    chunks = await collect(p, {"chunks": 2}, instance="fast")
    assert len(chunks) == 2

    async def slow_stream(instance, method, params):
        if instance.id == "slow":
            await asyncio.sleep(10)
        yield {"index": 0}

    p.stream_on_resource = slow_stream
    for _ in range(2):
        chunks = await collect(p, {}, first_token_timeout=0.05)
        assert [c["instance"] for c in chunks] == ["fast"]


async def test_streaming_a_provider_that_cannot_stream_is_a_user_error():
    from gleitzeit_jupyter.hub import HubProvider
    from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider

    class NoStream(MemoryProvider):
        stream_on_resource = HubProvider.stream_on_resource  # the base class's default

    async with NoStream([MemoryConfig("a")], health_check_interval=60) as p:
        with pytest.raises(UserError, match="does not stream"):
            async for _ in p.stream("m", {}):
                pass
