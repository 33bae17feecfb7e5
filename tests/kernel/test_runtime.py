"""The kernel runtime: loop thread, interruptible waits, providers and their events."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from typing import Any

import pytest

from gleitzeit_jupyter.hub.errors import ExecutionTimeout, UserError
from gleitzeit_jupyter.kernel.config import (
    DEFAULT_OLLAMA_HOST,
    Gleitzeit,
    hosts_from_env,
    normalize_host,
)
from gleitzeit_jupyter.kernel.runtime import Runtime
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


@pytest.fixture
def rt():
    runtime = Runtime(Gleitzeit())
    yield runtime
    runtime.shutdown()
    assert not runtime.thread.is_alive()


def interrupt_main_after(delay: float) -> threading.Thread:
    """What the kernel does on the stop button: SIGINT -> KeyboardInterrupt in the main thread."""

    def fire() -> None:
        time.sleep(delay)
        _thread.interrupt_main()

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


def test_run_returns_and_raises(rt: Runtime) -> None:
    async def ok() -> int:
        await asyncio.sleep(0.01)
        return 7

    async def bad() -> None:
        raise UserError("nope")

    assert rt.run(ok()) == 7
    with pytest.raises(UserError, match="nope"):
        rt.run(bad())
    assert rt.thread.name == "gleitzeit-runtime" and rt.thread.is_alive()


def test_timeout_cancels_the_coroutine(rt: Runtime) -> None:
    state: dict[str, Any] = {}

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            state["cleaned"] = asyncio.current_task().cancelling()  # type: ignore[union-attr]

    start = time.monotonic()
    with pytest.raises(ExecutionTimeout, match=r"0\.2 s"):
        rt.run(slow(), timeout=0.2)
    assert time.monotonic() - start < 2
    assert state["cleaned"] >= 1  # the finally ran because of a cancellation


def test_keyboard_interrupt_cancels_and_waits_for_cleanup(rt: Runtime) -> None:
    state: dict[str, Any] = {}

    async def long_call() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            # Cleanup that takes a moment (closing a stream, killing a worker) must be over
            # before run() gives control back to the notebook.
            await asyncio.sleep(0.2)
            state["cleanup_done"] = time.monotonic()
            raise

    interrupt_main_after(0.3)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rt.run(long_call())
    returned = time.monotonic()
    assert returned - start < 3
    assert state["cleanup_done"] <= returned
    # The runtime is still usable afterwards.
    assert rt.run(asyncio.sleep(0, result="alive")) == "alive"


def test_stream_hands_items_to_the_calling_thread(rt: Runtime) -> None:
    seen_threads = set()

    async def gen():
        for i in range(5):
            await asyncio.sleep(0.01)
            yield i

    out = []
    for item in rt.stream(gen):
        seen_threads.add(threading.current_thread().name)
        out.append(item)
    assert out == [0, 1, 2, 3, 4]
    assert seen_threads == {threading.current_thread().name}


def test_stream_interrupt_closes_the_generator(rt: Runtime) -> None:
    state: dict[str, bool] = {}

    async def endless():
        try:
            i = 0
            while True:
                await asyncio.sleep(0.02)
                yield i
                i += 1
        finally:
            state["closed"] = True

    interrupt_main_after(0.3)
    got = []
    with pytest.raises(KeyboardInterrupt):
        for item in rt.stream(endless):
            got.append(item)
    assert got and state.get("closed") is True


def test_stream_error_and_early_exit(rt: Runtime) -> None:
    state: dict[str, bool] = {}

    async def failing():
        yield 1
        raise UserError("bad chunk")

    with pytest.raises(UserError, match="bad chunk"):
        list(rt.stream(failing))

    async def many():
        try:
            for i in range(1000):
                await asyncio.sleep(0.001)
                yield i
        finally:
            state["closed"] = True

    for item in rt.stream(many):
        if item == 3:
            break
    deadline = time.monotonic() + 2
    while not state.get("closed") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state.get("closed") is True


def test_run_from_the_loop_thread_is_refused(rt: Runtime) -> None:
    async def nested() -> str:
        async def inner() -> int:
            return 1

        try:
            rt.run(inner())
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    assert "own loop thread" in rt.run(nested())


def test_providers_subscribe_and_shutdown() -> None:
    rt = Runtime(Gleitzeit())
    events: list[tuple[str, str, str | None]] = []
    seen = threading.Event()

    def on_event(name: str, event: Any) -> None:
        assert threading.current_thread() is rt.thread
        events.append((name, event.kind, event.instance_id))
        seen.set()

    rt.subscribe(on_event)  # before any provider exists
    mem = rt.get_or_create("mem", lambda: MemoryProvider([MemoryConfig("a"), MemoryConfig("b")]))
    assert rt.get_or_create("mem", lambda: pytest.fail("created twice")) is mem
    assert mem.initialized and set(rt.providers) == {"mem"}
    assert seen.wait(2)
    assert ("mem", "membership", None) in events  # the runtime announced the new pool

    late: list[str] = []
    rt.subscribe(lambda name, ev: late.append(f"{name}:{ev.kind}"))  # after creation
    mem.drain("a")  # a status event from the hub itself
    deadline = time.monotonic() + 2
    while not any(e.startswith("mem:status") for e in late) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(e.startswith("mem:status") for e in late), late

    rt.shutdown()
    assert not rt.thread.is_alive()
    assert mem.destroyed == 2
    assert rt.loop.is_closed()
    with pytest.raises(RuntimeError, match="shut down"):
        rt.run(asyncio.sleep(0))


def test_failed_initialize_leaves_nothing(rt: Runtime) -> None:
    class Broken(MemoryProvider):
        async def initialize(self) -> None:
            await super().initialize()
            raise UserError("cannot start")

    made: list[Broken] = []

    def factory() -> Broken:
        made.append(Broken([MemoryConfig("x")]))
        return made[-1]

    with pytest.raises(UserError, match="cannot start"):
        rt.get_or_create("broken", factory)
    assert "broken" not in rt.providers
    assert made[0].destroyed == 1


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("", DEFAULT_OLLAMA_HOST),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:9000", "http://gpu-box:9000"),
        ("https://ollama.example/", "https://ollama.example:443"),
        ("http://ollama.example", "http://ollama.example:80"),
        ("::", "http://127.0.0.1:11434"),
        ("fe80::1", "http://[fe80::1]:11434"),
        ("http://10.0.0.5:11434", "http://10.0.0.5:11434"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_normalize_host(raw: str, url: str) -> None:
    assert normalize_host(raw) == url


def test_hosts_from_env() -> None:
    assert hosts_from_env({}) == [DEFAULT_OLLAMA_HOST]
    assert hosts_from_env({"OLLAMA_HOST": "box:1234"}) == ["http://box:1234"]
    env = {"OLLAMA_HOST": "ignored", "GLEITZEIT_OLLAMA_HOSTS": "a:1, http://b:2 ,"}
    assert hosts_from_env(env) == ["http://a:1", "http://b:2"]


def test_config_defaults_come_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLEITZEIT_OLLAMA_HOSTS", "one:1,two:2")
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/other.sock")
    cfg = Gleitzeit()
    assert cfg.ollama_hosts == ["http://one:1", "http://two:2"]
    assert cfg.docker_host == "unix:///tmp/other.sock"
