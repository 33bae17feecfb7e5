"""OllamaProvider against stand-ins: request bodies, routing, error mapping, timeouts,
discovery and resource cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from gleitzeit_jupyter.hub import (
    CircuitState,
    ExecutionTimeout,
    NoResourceAvailable,
    ResourceFailed,
    ResourceStatus,
    UserError,
)
from gleitzeit_jupyter.providers import _ollama_wire as wire
from gleitzeit_jupyter.providers.hosts import parse_host
from gleitzeit_jupyter.providers.ollama import OllamaConfig, OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
def pair() -> Iterator[tuple[OllamaStandIn, OllamaStandIn]]:
    with OllamaStandIn() as a, OllamaStandIn() as b:
        yield a, b


@contextlib.asynccontextmanager
async def pool(*urls: str, **kw) -> AsyncIterator[OllamaProvider]:
    kw.setdefault("health_check_interval", 60)
    p = OllamaProvider(hosts=list(urls), auto_discover=False, **kw)
    await p.initialize()
    try:
        yield p
    finally:
        await p.shutdown()


def _served(srv: OllamaStandIn, path: str = "/api/generate") -> int:
    return len(srv.requests_to(path))


async def test_convenience_params_go_inside_options() -> None:
    with OllamaStandIn() as srv:
        async with pool(srv.url) as p:
            await p.execute(
                "llm/generate",
                {
                    **GEN,
                    "system": "be brief",
                    "temperature": 0.2,
                    "max_tokens": 5,
                    "top_p": 0.9,
                    "seed": 42,
                    "stop": ["\n"],
                    "options": {"num_ctx": 2048},
                    "keep_alive": "1m",
                    "tenant": "alice",
                    "priority": 3,
                },
            )
            await p.execute(
                "llm/chat",
                {
                    "model": "llama3.2",
                    "temperature": 0,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
        gen = srv.requests_to("/api/generate")[0].body
        assert gen == {
            "model": "llama3.2",
            "prompt": "hello",
            "system": "be brief",
            "keep_alive": "1m",
            "stream": False,
            "options": {
                "num_ctx": 2048,
                "temperature": 0.2,
                "num_predict": 5,
                "top_p": 0.9,
                "seed": 42,
                "stop": ["\n"],
            },
        }  # nothing at top level that Ollama would silently ignore; hub params stay home
        assert srv.requests_to("/api/chat")[0].body["options"] == {"temperature": 0}


def test_name_normalization() -> None:
    assert wire.normalize_model("llama3.2") == "llama3.2:latest"
    assert wire.normalize_model("llama3.2:latest") == "llama3.2:latest"
    assert wire.normalize_model("registry:5000/me/m") == "registry:5000/me/m:latest"
    assert parse_host("0.0.0.0") == "http://127.0.0.1:11434"
    assert parse_host("gpu-box:11500/") == "http://gpu-box:11500"
    assert parse_host("https://ollama.example") == "https://ollama.example:443"


async def test_loaded_model_is_preferred(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    b.loaded = ["llama3.2"]  # only B has it in memory (per /api/ps)
    async with pool(a.url, b.url) as p:
        rs = [await p.execute("llm/generate", GEN) for _ in range(6)]
        rs += await asyncio.gather(*(p.execute("llm/generate", GEN) for _ in range(4)))
        assert {r["instance"] for r in rs} == {p.instances[1].id}  # 4 = its parallel slots
        assert p.instances[1].metadata["loaded"] == ["llama3.2:latest"]


async def test_model_deleted_on_one_instance_fails_over_to_one_listing_it(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    a.loaded = ["llama3.2"]
    async with pool(a.url, b.url, strategy="least_loaded") as p:
        a.models = ["other"]  # deleted on A; the provider's list is now stale
        a_id, b_id = p.instances[0].id, p.instances[1].id
        assert p.instance_accepts(p.instances[0], "llm/generate", GEN)
        r = await p.execute("llm/generate", GEN, instance=None)
        assert r["instance"] == b_id  # A's 404 moved the call, it did not fail it
        assert p.instances[0].breaker_state is CircuitState.CLOSED
        assert p.get_instance(a_id).metrics.failures == 0
        for _ in range(50):  # A's model list is read again at once, not at the next check
            if p.get_instance(a_id).metadata.get("models") == ["other:latest"]:
                break
            await asyncio.sleep(0.02)
        assert p.get_instance(a_id).metadata["models"] == ["other:latest"]


async def test_model_missing_everywhere_is_the_callers_error(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    async with pool(a.url, b.url) as p:
        a.models = b.models = ["other"]  # gone from both since the last refresh
        with pytest.raises(UserError, match="not found"):
            await p.execute("llm/generate", GEN)
        assert all(i.breaker_state is CircuitState.CLOSED for i in p.instances)


async def test_busy_503_retries_elsewhere_and_backs_off(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    a.loaded = ["llama3.2"]  # A would be preferred...
    a.faults.busy_rate = 1.0  # ...but it is busy
    async with pool(a.url, b.url, busy_backoff=30) as p:
        results = [await p.execute("llm/generate", GEN) for _ in range(5)]
        assert {r["instance"] for r in results} == {p.instances[1].id}
        assert _served(a) == 1  # one 503, then A is avoided for busy_backoff seconds


async def test_400_is_a_user_error_not_retried(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    for s in pair:
        s.faults.update(error_rate=1.0, error_status=400)
    async with pool(a.url, b.url) as p:
        with pytest.raises(UserError, match="rejected"):
            await p.execute("llm/generate", GEN)
        assert _served(a) + _served(b) == 1
        assert all(i.breaker.consecutive_failures == 0 for i in p.instances)


async def test_5xx_and_reset_fail_over(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    a.loaded = b.loaded = ["llama3.2"]
    async with pool(a.url, b.url, strategy="round_robin") as p:
        for knob in ({"error_rate": 1.0, "error_status": 500}, {"reset_rate": 1.0}):
            a.faults.update(error_rate=0.0, reset_rate=0.0)
            a.faults.update(**knob)
            tried = _served(a)
            rs = [await p.execute("llm/generate", GEN) for _ in range(4)]
            assert {r["instance"] for r in rs} == {p.instances[1].id}
            assert _served(a) - tried >= 2  # round robin really sent calls to A
        assert p.metrics().set_index("instance").loc[p.instances[0].id, "failures"] >= 4


async def test_all_down_is_resource_failed_not_user_error() -> None:
    with OllamaStandIn() as srv:
        async with pool(srv.url, retries=1) as p:
            srv.down()
            with pytest.raises(ResourceFailed, match="cannot connect"):
                await p.execute("llm/generate", GEN)


async def test_unreachable_at_start_is_no_resource_available() -> None:
    with OllamaStandIn() as srv:
        srv.down()
        async with pool(srv.url) as p:
            with pytest.raises(NoResourceAvailable, match="did not list their models"):
                await p.execute("llm/generate", GEN)
            srv.up()
            await p.check_health_now()  # the next health check learns its models
            assert (await p.execute("llm/generate", GEN))["response"]


async def test_mid_stream_error_line(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    for s in pair:
        s.faults.stream_error_after = 2
    async with pool(a.url, b.url) as p:
        got = []
        with pytest.raises(ResourceFailed, match="mid-stream"):
            async for c in p.stream("llm/generate", GEN):
                got.append(c)
        assert len(got) == 2  # output was produced: raised, not silently retried
        a.faults.stream_error_after = None
        r = await p.execute("llm/generate", GEN)  # non-streaming: a 500, retried on A
        assert r["instance"] == p.instances[0].id


async def test_first_token_timeout_fails_over(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    a.loaded = ["llama3.2"]
    a.faults.hang = True
    async with pool(a.url, b.url, first_token_timeout=0.3) as p:
        t0 = time.perf_counter()
        chunks = [c async for c in p.stream("llm/generate", GEN)]
        assert chunks[-1]["instance"] == p.instances[1].id
        assert time.perf_counter() - t0 < 3  # 0.3 s on A, then B; A would hang forever
        assert "no first token" in str(p.instances[0].metrics.last_error)
    a.faults.hang = False


async def test_request_timeout_fails_over(pair: tuple[OllamaStandIn, OllamaStandIn]) -> None:
    a, b = pair
    a.loaded = ["llama3.2"]
    a.faults.hang = True
    async with pool(a.url, b.url, request_timeout=0.3, retries=0) as p:
        with pytest.raises(ExecutionTimeout):
            await p.execute("llm/generate", GEN)
    async with pool(a.url, b.url, request_timeout=0.3) as p:
        assert (await p.execute("llm/generate", GEN))["instance"] == p.instances[1].id
    a.faults.hang = False


async def test_connection_pool_is_bounded() -> None:
    with OllamaStandIn(latency=0.05, num_parallel=8) as srv:
        async with pool(OllamaConfig(host=srv.url, max_connections=2)) as p:
            before = srv.connections_total
            await asyncio.gather(*(p.execute("llm/generate", GEN) for _ in range(8)))
            assert srv.peak_active == 2 and srv.connections_total - before <= 2


async def test_shutdown_closes_clients_and_extras_report_tokens_per_s() -> None:
    with OllamaStandIn(tokens_per_s=1000) as srv:
        p = OllamaProvider(hosts=[srv.url], auto_discover=False)
        await p.initialize()
        await p.execute("llm/generate", GEN)
        assert p.metrics().set_index("instance").loc[p.instances[0].id, "tokens_per_s"] > 100
        assert p.status()["instances"][0]["tokens_per_s"] > 100
        client = p.instances[0].handle.client
        await p.shutdown()
        assert client.is_closed


async def test_discovery_from_env_and_port_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    with OllamaStandIn() as a, OllamaStandIn() as b, OllamaStandIn() as c, OllamaStandIn() as d:
        monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{a.port}")
        monkeypatch.setenv("GLEITZEIT_OLLAMA_HOSTS", f"{b.url}, http://127.0.0.1:{b.port}/")
        p = OllamaProvider(
            hosts=[d.url],
            scan_ports=[c.port, d.port],
            health_check_interval=60,
            discovery_interval=3600,
        )
        async with p:
            found = {i.id: i.origin for i in p.instances}
            # GLEITZEIT_OLLAMA_HOSTS names the pool and wins over OLLAMA_HOST, as in config
            assert found == {
                f"127.0.0.1:{s.port}": o
                for s, o in (
                    (b, "discovered"),
                    (c, "discovered"),
                    (d, "explicit"),
                )
            }
            c.down()  # gone from the scan: retired; d is explicit: kept even when down
            d.down()
            monkeypatch.delenv("OLLAMA_HOST")
            await p.discover_now()
            assert {i.id for i in p.instances} == {f"127.0.0.1:{s.port}" for s in (b, d)}
            monkeypatch.delenv("GLEITZEIT_OLLAMA_HOSTS")
            monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{a.port}")
            await p.discover_now()  # OLLAMA_HOST alone names one server
            assert {i.id for i in p.instances} == {f"127.0.0.1:{s.port}" for s in (a, d)}


async def test_a_single_host_string_is_one_host() -> None:
    with OllamaStandIn() as srv:
        async with OllamaProvider(hosts=srv.url, auto_discover=False) as p:
            assert [i.endpoint for i in p.instances] == [srv.url]


async def test_no_hosts_and_no_discovery_uses_default_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OllamaStandIn() as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        async with OllamaProvider(auto_discover=False, health_check_interval=60) as p:
            assert [i.endpoint for i in p.instances] == [srv.url]
            assert p.instances[0].status is ResourceStatus.HEALTHY


async def test_model_only_on_a_drained_instance_is_not_a_user_error(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    b.models = ["llama3.2", "phi3"]
    async with pool(a.url, b.url) as p:
        p.drain(p.instances[1].id)
        with pytest.raises(NoResourceAvailable) as ei:
            await p.execute("llm/generate", {"model": "phi3", "prompt": "x"})
        assert not isinstance(ei.value, UserError)
        p.enable(p.instances[1].id)
        r = await p.execute("llm/generate", {"model": "phi3", "prompt": "x"})
        assert r["instance"] == p.instances[1].id


async def test_add_and_remove_a_server_at_run_time(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    b.models = ["llama3.2", "phi3"]
    async with pool(a.url) as p:
        with pytest.raises(UserError):
            await p.execute("llm/generate", {"model": "phi3", "prompt": "x"})
        inst = await p.add_resource(f"127.0.0.1:{b.port}")  # a bare host:port is fine
        assert inst.id == f"127.0.0.1:{b.port}" and inst.metadata["models"] == [
            "llama3.2:latest",
            "phi3:latest",
        ]
        assert (await p.execute("llm/generate", {"model": "phi3", "prompt": "x"}))[
            "instance"
        ] == inst.id
        client = inst.handle.client
        await p.remove_resource(inst.id)
        assert client.is_closed and [i.id for i in p.instances] == [f"127.0.0.1:{a.port}"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, UserError),
        (401, UserError),
        (404, UserError),
        (408, ResourceFailed),
        (429, ResourceFailed),
        (500, ResourceFailed),
        (502, ResourceFailed),
        (503, ResourceFailed),
    ],
)
def test_status_mapping(status: int, kind: type) -> None:
    err = wire.http_error(status, '{"error": "boom"}', "h:1", "m:latest")
    assert type(err) is kind and "boom" in str(err) and "h:1" in str(err)


async def test_models_union_with_one_instance_down(
    pair: tuple[OllamaStandIn, OllamaStandIn],
) -> None:
    a, b = pair
    a.models = ["llama3.2", "qwen2.5:0.5b"]
    b.models = ["llama3.2"]
    b.loaded = ["llama3.2"]
    p = OllamaProvider(hosts=[a.url, b.url], auto_discover=False, health_check_interval=60)
    with pytest.raises(NoResourceAvailable):
        await p.execute("llm/models")  # not initialized yet
    async with p:
        ia, ib = (i.id for i in p.instances)
        r = await p.execute("llm/models")
        assert [(m["name"], m["instances"], m["loaded_on"]) for m in r["models"]] == [
            ("llama3.2:latest", [ia, ib], [ib]),
            ("qwen2.5:0.5b", [ia], []),
        ]
        a.down()
        r = await p.execute("llm/models")
        assert r["instances"][ia]["reachable"] is False and r["instances"][ib]["reachable"]
        assert [m["name"] for m in r["models"]] == ["llama3.2:latest", "qwen2.5:0.5b"]
