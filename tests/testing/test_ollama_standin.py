"""The Ollama stand-in, checked against the official ``ollama`` Python client (its wire format
must be Ollama's) and for each fault-injection knob."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from gleitzeit_jupyter.testing.ollama import ERR_BUSY, OllamaStandIn


@pytest.fixture
def srv() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=["llama3.2", "nomic-embed-text:latest"]) as s:
        yield s


@pytest.fixture
def client(srv: OllamaStandIn) -> Iterator[ollama.Client]:
    c = ollama.Client(host=srv.url, timeout=10)
    yield c
    c._client.close()


def test_official_client_lists_and_generates(srv: OllamaStandIn, client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert client.ps().models == []  # nothing loaded before the first call

    r = client.generate(model="llama3.2", prompt="Why is the sky blue?")
    assert r.done and r.done_reason == "stop" and r.response
    assert r.model == "llama3.2"
    assert r.eval_count == 12 and r.prompt_eval_count == 5
    assert r.eval_duration and r.eval_duration > 0 and r.total_duration
    assert r.load_duration is not None and r.context == [1, 2, 3]
    assert [m.model for m in client.ps().models] == ["llama3.2:latest"]

    parts = list(
        client.generate(model="llama3.2:latest", prompt="Why is the sky blue?", stream=True)
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.response or "" for p in parts) == r.response  # deterministic
    assert parts[-1].response == "" and parts[-1].eval_count == len(parts) - 1


def test_official_client_chat_embed_show(client: ollama.Client) -> None:
    msgs = [{"role": "user", "content": "hello there"}]
    c = client.chat(model="llama3.2", messages=msgs)
    assert c.message.role == "assistant" and c.message.content and c.done
    chunks = list(client.chat(model="llama3.2", messages=msgs, stream=True))
    assert "".join(ch.message.content or "" for ch in chunks) == c.message.content

    e = client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 16
    assert client.embed(model="nomic-embed-text", input="a").embeddings[0] == e.embeddings[0]
    assert client.show("llama3.2").details is not None


def test_options_shape_generation(srv: OllamaStandIn, client: ollama.Client) -> None:
    r = client.generate(model="llama3.2", prompt="p", options={"num_predict": 3, "seed": 1})
    assert r.eval_count == 3 and r.done_reason == "length"
    r2 = client.generate(model="llama3.2", prompt="p", options={"num_predict": 3, "seed": 2})
    assert r2.response != r.response  # the seed feeds the generator
    first_word = r.response.split()[1]
    r3 = client.generate(
        model="llama3.2", prompt="p", options={"num_predict": 3, "seed": 1, "stop": [first_word]}
    )
    assert first_word not in r3.response and r3.done_reason == "stop"
    body = srv.requests_to("/api/generate")[0].body
    assert body["options"] == {"num_predict": 3, "seed": 1} and body["stream"] is False


def test_errors_use_ollamas_statuses_and_messages(
    srv: OllamaStandIn, client: ollama.Client
) -> None:
    with pytest.raises(ollama.ResponseError) as ei:
        client.generate(model="mistral", prompt="x")
    assert ei.value.status_code == 404
    assert ei.value.error == 'model "mistral" not found, try pulling it first'

    r = httpx.post(f"{srv.url}/api/generate", json={"prompt": "x"})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}
    assert httpx.get(f"{srv.url}/api/nope").status_code == 404
    assert httpx.get(f"{srv.url}/api/version").json() == {"version": "0.6.5"}
    assert httpx.get(srv.url).text == "Ollama is running"

    srv.faults.busy_rate = 1.0
    with pytest.raises(ollama.ResponseError) as ei:
        client.generate(model="llama3.2", prompt="x")
    assert ei.value.status_code == 503 and ei.value.error == ERR_BUSY
    assert client.list().models  # a busy server still answers /api/tags
    srv.faults.busy_rate = 0.0

    srv.faults.update(error_rate=1.0, error_status=502)
    with pytest.raises(ollama.ResponseError) as ei:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code == 502
    srv.faults.error_rate = 0.0


def test_mid_stream_error_line(srv: OllamaStandIn, client: ollama.Client) -> None:
    srv.faults.stream_error_after = 2
    got: list[str] = []
    with pytest.raises(ollama.ResponseError, match="error was encountered"):
        for part in client.generate(model="llama3.2", prompt="x", stream=True):
            got.append(part.response or "")
    assert len(got) == 2
    # Raw wire check: status 200, NDJSON, and the last line is {"error": ...}.
    with httpx.stream(
        "POST", f"{srv.url}/api/generate", json={"model": "llama3.2", "prompt": "x"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "error" in lines[-1] and all("response" in x for x in lines[:-1])
    with pytest.raises(ollama.ResponseError) as ei:  # non-streaming: a 500
        client.generate(model="llama3.2", prompt="x")
    assert ei.value.status_code == 500


def test_connection_reset_and_hang(srv: OllamaStandIn) -> None:
    srv.faults.reset_rate = 1.0
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(f"{srv.url}/api/generate", json={"model": "llama3.2", "prompt": "x"})
    srv.faults.reset_rate = 0.0

    srv.faults.hang = True
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{srv.url}/api/generate", json={"model": "llama3.2", "prompt": "x"}, timeout=0.3
        )
    srv.faults.hang = False
    ok = httpx.post(
        f"{srv.url}/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False}
    )
    assert ok.status_code == 200 and ok.json()["done"] is True


def test_down_up_keeps_port_and_refuses_while_down(srv: OllamaStandIn) -> None:
    port = srv.port
    srv.down()
    assert not srv.is_up
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/api/version")
    srv.up()
    assert srv.port == port and httpx.get(f"{srv.url}/api/version").status_code == 200
    srv.restart()
    assert httpx.get(f"{srv.url}/api/version").status_code == 200


def test_down_drops_inflight_calls() -> None:
    with OllamaStandIn(latency=5.0) as s:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                httpx.post(
                    f"{s.url}/api/generate",
                    json={"model": "llama3.2", "prompt": "x", "stream": False},
                    timeout=10,
                )
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=call)
        t.start()
        _wait(lambda: s.active == 1)
        t0 = time.perf_counter()
        s.down()
        t.join(5)
        assert time.perf_counter() - t0 < 2
        assert errors and isinstance(errors[0], httpx.TransportError)


def test_parallel_slots_and_queue_limit() -> None:
    with OllamaStandIn(latency=0.5, num_parallel=2, max_queue=1) as s:
        results: list[int] = []

        def call() -> None:
            r = httpx.post(
                f"{s.url}/api/generate",
                json={"model": "llama3.2", "prompt": "x", "stream": False},
                timeout=10,
            )
            results.append(r.status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        t0 = time.perf_counter()
        threads[0].start()
        threads[1].start()
        _wait(lambda: s.active == 2)  # both slots busy
        threads[2].start()
        _wait(lambda: s.waiting == 1)  # the queue is full
        threads[3].start()
        threads[3].join()
        assert results == [503]  # over the queue limit: turned away at once
        for t in threads[:3]:
            t.join()
        assert s.peak_active == 2 and sorted(results) == [200, 200, 200, 503]
        assert time.perf_counter() - t0 >= 1.0  # the queued call waited for a slot


def test_cold_load_token_rate_and_unload() -> None:
    with OllamaStandIn(load_time=0.1, tokens_per_s=100, default_tokens=5) as s:
        c = ollama.Client(host=s.url)
        r = c.generate(model="llama3.2", prompt="x")
        assert r.load_duration is not None and r.load_duration >= 100_000_000
        assert r.eval_duration is not None and r.eval_duration >= 40_000_000  # 5 tok @100/s
        r2 = c.generate(model="llama3.2", prompt="x")
        assert r2.load_duration is not None and r2.load_duration < 10_000_000
        assert [m.model for m in c.ps().models] == ["llama3.2:latest"]
        u = c.generate(model="llama3.2", prompt="", keep_alive=0)
        assert u.done_reason == "unload" and c.ps().models == []


def test_server_sees_client_hang_up_mid_stream() -> None:
    with OllamaStandIn(tokens_per_s=20, default_tokens=200) as s:
        with (
            httpx.Client() as hc,
            hc.stream(
                "POST", f"{s.url}/api/generate", json={"model": "llama3.2", "prompt": "x"}
            ) as r,
        ):
            it = r.iter_lines()
            assert json.loads(next(it))["done"] is False
        # closed after one line of a 10 s answer: the server must notice at once
        _wait(lambda: len(s.disconnects) == 1 and s.active == 0, timeout=1.0)
        assert s.disconnects[0].path == "/api/generate"


async def test_async_client_against_standin() -> None:
    with OllamaStandIn(latency=0.05, num_parallel=4) as s:
        c = ollama.AsyncClient(host=s.url)
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(c.generate(model="llama3.2", prompt=str(i)) for i in range(8)))
        assert all(r.done for r in rs)
        assert time.perf_counter() - t0 >= 0.1  # 8 calls over 4 slots: two rounds
        parts = [
            p
            async for p in await c.chat(
                model="llama3.2", messages=[{"role": "user", "content": "x"}], stream=True
            )
        ]
        assert parts[-1].done


def test_runs_as_a_process_with_remote_control() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gleitzeit_jupyter.testing.ollama",
            "--port",
            str(port),
            "--models",
            "llama3.2,qwen2.5:0.5b",
            "--latency",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        tags = httpx.get(f"{url}/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["llama3.2:latest", "qwen2.5:0.5b"]
        httpx.post(f"{url}/_standin/control", json={"faults": {"busy_rate": 1.0}})
        r = httpx.post(f"{url}/api/generate", json={"model": "qwen2.5:0.5b", "prompt": "x"})
        assert r.status_code == 503
        bad = httpx.post(f"{url}/_standin/control", json={"faults": {"nope": 1}})
        assert bad.status_code == 400
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(cond: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


async def test_parallel_slots_can_change_at_run_time() -> None:
    with OllamaStandIn(latency=0.1, num_parallel=1) as s:
        c = ollama.AsyncClient(host=s.url)
        await asyncio.gather(*(c.generate(model="llama3.2", prompt="x") for _ in range(3)))
        assert s.peak_active == 1
        s.num_parallel = 3
        await asyncio.gather(*(c.generate(model="llama3.2", prompt="x") for _ in range(3)))
        assert s.peak_active == 3


def test_official_client_reads_capabilities_thinking_tools_and_schemas() -> None:
    caps = {"qwen3": ["completion", "thinking", "tools"], "llava": ["completion", "vision"]}
    with OllamaStandIn(models=["qwen3", "llava"], capabilities=caps) as s:
        c = ollama.Client(host=s.url, timeout=10)
        assert c.show("qwen3").capabilities == ["completion", "thinking", "tools"]
        msgs = [{"role": "user", "content": "hi"}]

        r = c.chat(model="qwen3", messages=msgs, think=True)
        assert r.message.thinking and r.message.content
        parts = list(c.chat(model="qwen3", messages=msgs, think="high", stream=True))
        thought = "".join(p.message.thinking or "" for p in parts)
        assert thought == r.message.thinking  # thinking streams first, then the answer
        assert parts[0].message.thinking and not parts[0].message.content

        def add(a: int, b: int) -> int:
            """Add two numbers.

            Args:
              a: first
              b: second
            """
            return a + b

        r = c.chat(model="qwen3", messages=msgs, tools=[add])
        (call,) = r.message.tool_calls or []
        assert call.function.name == "add" and set(call.function.arguments) == {"a", "b"}

        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        }
        r = c.generate(model="qwen3", prompt="plan", format=schema)
        answer = json.loads(r.response)
        assert isinstance(answer["city"], str) and isinstance(answer["days"], int)

        png = b"\x89PNG\r\n\x1a\n fake"
        r = c.generate(model="llava", prompt="what is it?", images=[png])
        assert r.response
        with pytest.raises(ollama.ResponseError, match="does not support images"):
            c.generate(model="qwen3", prompt="what is it?", images=[png])
        with pytest.raises(ollama.ResponseError, match="does not support thinking"):
            c.generate(model="llava", prompt="x", think=True)
        resp = httpx.post(
            f"{s.url}/api/generate",
            json={"model": "llava", "prompt": "x", "images": ["not base64!"], "stream": False},
        )
        assert resp.status_code == 400 and "base64" in resp.json()["error"]
        c._client.close()


def test_loading_a_model_evicts_the_least_recently_used_idle_one() -> None:
    with OllamaStandIn(models=["a", "b"], loaded=["a"], max_loaded=1, load_time=0.05) as s:
        c = ollama.Client(host=s.url, timeout=10)
        c.generate(model="a", prompt="x")
        assert s.memory.loads["a"] == 0  # already in memory
        r = c.generate(model="b", prompt="x")
        assert r.load_duration and r.load_duration >= 50_000_000
        assert [m.model for m in c.ps().models] == ["b:latest"]
        c.generate(model="a", prompt="x")
        assert dict(s.memory.loads) == {"b:latest": 1, "a:latest": 1}
        assert dict(s.memory.evictions) == {"a:latest": 1, "b:latest": 1}
        c._client.close()
