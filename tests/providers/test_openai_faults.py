"""OpenAIProvider under faults: wrong keys, missing models, 429 backpressure, 5xx, resets,
hangs and failures in the middle of a stream, each against stand-in servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest

from gleitzeit_jupyter.hub import (
    CircuitState,
    ExecutionTimeout,
    NoResourceAvailable,
    ResourceFailed,
    UserError,
)
from gleitzeit_jupyter.providers.openai import OpenAIProvider
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
def pair() -> Iterator[list[OpenAIStandIn]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(OpenAIStandIn(seed=i, latency=0.005)) for i in range(2)]


async def _many(p: OpenAIProvider, n: int, concurrency: int, params: dict = GEN) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> dict:
        async with sem:
            return await p.execute("llm/generate", params)

    return await asyncio.gather(*(one() for _ in range(n)))


async def test_wrong_key_is_a_user_error_naming_host_and_setting() -> None:
    with OpenAIStandIn(api_key="sk-right") as srv:
        async with OpenAIProvider(hosts=[srv.url], api_key="sk-wrong") as p:
            with pytest.raises(UserError) as info:
                await p.execute("llm/generate", GEN)
            ident = p.instances[0].id
            assert p.instances[0].breaker_state is CircuitState.CLOSED
    text = str(info.value)
    assert ident in text and "API key" in text and "OPENAI_API_KEY" in text
    assert "\n" not in text


async def test_a_server_refusing_the_key_is_skipped_when_another_has_the_model(
    pair: list[OpenAIStandIn],
) -> None:
    pair[0].api_key = "sk-other"
    async with OpenAIProvider(hosts=[s.url for s in pair], api_key="sk-mine") as p:
        rs = await _many(p, 10, 4)
        assert {r["instance"] for r in rs} == {p.instances[1].id}


async def test_unknown_model_names_what_is_served(pair: list[OpenAIStandIn]) -> None:
    async with OpenAIProvider(hosts=[s.url for s in pair]) as p:
        with pytest.raises(UserError, match=r"'nope' is not served.*served: llama3\.2"):
            await p.execute("llm/generate", {"model": "nope", "prompt": "x"})


async def test_404_for_a_listed_model_moves_the_call_to_a_server_that_has_it(
    pair: list[OpenAIStandIn],
) -> None:
    async with OpenAIProvider(hosts=[s.url for s in pair], strategy="round_robin") as p:
        pair[0].models = ["other"]  # removed there after the provider read its list
        rs = await _many(p, 20, 4)
        assert len(rs) == 20 and all(r["instance"] == p.instances[1].id for r in rs)
        assert p.instances[0].breaker_state is CircuitState.CLOSED
        assert p.status()["instances"][0]["failures"] == 0


async def test_429_sends_calls_elsewhere_and_never_opens_the_breaker(
    pair: list[OpenAIStandIn],
) -> None:
    pair[0].faults.update(rate_limit_rate=1.0, retry_after=0.5)
    async with OpenAIProvider(hosts=[s.url for s in pair], health_check_interval=60) as p:
        rs = await _many(p, 60, 8)
        limited = p.status()["instances"][0]
        assert len(rs) == 60
        assert Counter(r["instance"] for r in rs)[p.instances[1].id] == 60
        assert limited["failures"] == 0 and limited["breaker"] == "closed"
        assert limited["skipped"].startswith("rate limited (429, retry after 0.5 s)")
        # Retry-After keeps new calls away: far fewer asks than calls went to the other
        assert 1 <= len(pair[0].requests_to("/v1/chat/completions")) < 20


async def test_429_on_the_only_server_waits_retry_after_then_succeeds() -> None:
    with OpenAIStandIn() as srv:
        async with OpenAIProvider(hosts=[srv.url], health_check_interval=60) as p:
            srv.faults.update(rate_limit_rate=1.0, retry_after=0.4)
            task = asyncio.ensure_future(p.execute("llm/generate", GEN))
            while not srv.requests_to("/v1/chat/completions"):  # noqa: ASYNC110 - another thread's
                await asyncio.sleep(0.01)
            srv.faults.update(rate_limit_rate=0.0)
            r = await task
        asked = srv.requests_to("/v1/chat/completions")
    assert r["response"] and len(asked) == 2
    # honoured: the second ask came no sooner than the jittered Retry-After allows
    assert asked[1].at - asked[0].at >= 0.4 * 0.75


async def test_429_with_retry_after_zero_backs_off_instead_of_hammering_the_server() -> None:
    # "Retry-After: 0" (or a date already past) on every answer must not turn one call into
    # a tight loop of requests for the whole busy_wait.
    with OpenAIStandIn() as srv:
        async with OpenAIProvider(hosts=[srv.url], health_check_interval=60, busy_wait=2) as p:
            srv.faults.update(rate_limit_rate=1.0, retry_after=0)
            with pytest.raises(ResourceFailed, match="rate limiting"):
                await p.execute("llm/generate", GEN)
        assert 2 <= len(srv.requests_to("/v1/chat/completions")) <= 20


async def test_5xx_fails_over_and_counts_against_the_server(pair: list[OpenAIStandIn]) -> None:
    pair[0].faults.update(error_rate=1.0, error_status=502)
    async with OpenAIProvider(
        hosts=[s.url for s in pair], health_check_interval=60, strategy="round_robin"
    ) as p:
        rs = await _many(p, 30, 4)
        assert len(rs) == 30 and {r["instance"] for r in rs} == {p.instances[1].id}
        assert p.status()["instances"][0]["failures"] > 0


async def test_reset_connections_fail_over(pair: list[OpenAIStandIn]) -> None:
    pair[0].faults.update(reset_rate=1.0)
    async with OpenAIProvider(
        hosts=[s.url for s in pair], health_check_interval=60, strategy="round_robin"
    ) as p:
        rs = await _many(p, 20, 4)
        assert len(rs) == 20 and all(r["instance"] == p.instances[1].id for r in rs)


async def test_everything_down_is_no_resource_available() -> None:
    with OpenAIStandIn() as srv:
        async with OpenAIProvider(hosts=[srv.url], health_check_interval=0.1) as p:
            srv.down()
            with pytest.raises((NoResourceAvailable, ResourceFailed)):
                await p.execute("llm/generate", GEN, timeout=5)


async def test_mid_stream_failure_is_raised_after_the_output_not_restarted(
    pair: list[OpenAIStandIn],
) -> None:
    for s in pair:
        s.faults.update(stream_error_after=3)
    async with OpenAIProvider(hosts=[s.url for s in pair], health_check_interval=60) as p:
        got: list[dict] = []
        with pytest.raises(ResourceFailed, match="failed mid-stream"):
            async for c in p.stream("llm/generate", GEN):
                got.append(c)
    assert [c["done"] for c in got] == [False, False, False]
    assert sum(len(s.requests_to("/v1/chat/completions")) for s in pair) == 1


async def test_hang_before_first_token_times_out_and_fails_over(
    pair: list[OpenAIStandIn],
) -> None:
    pair[0].faults.update(hang=True)
    try:
        async with OpenAIProvider(
            hosts=[s.url for s in pair],
            health_check_interval=60,
            first_token_timeout=0.3,
            strategy="round_robin",
        ) as p:
            chunks = [c async for c in p.stream("llm/generate", GEN)]
            chunks += [c async for c in p.stream("llm/generate", GEN)]
            assert {c["instance"] for c in chunks if c["done"]} == {p.instances[1].id}
            with pytest.raises(ExecutionTimeout):
                async for _ in p.stream("llm/generate", GEN, instance=p.instances[0].id):
                    pass
    finally:
        pair[0].faults.update(hang=False)
