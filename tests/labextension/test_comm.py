"""The kernel side of the sidebar (gleitzeit_jupyter.kernel.comm) in a real ipykernel.

The client below speaks the comm protocol over ZMQ exactly as the labextension does; the pool
is a real HubProvider (the in-memory test provider) living in the real kernel runtime.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .kernel_client import KernelHarness, is_comm_msg

SETUP = """
%load_ext gleitzeit_jupyter
from gleitzeit_jupyter.kernel.runtime import get_runtime
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider
rt = get_runtime()
pool = rt.get_or_create(
    "memory",
    lambda: MemoryProvider(
        [MemoryConfig("m0"), MemoryConfig("m1")],
        health_check_interval=0.2, healthy_threshold=1, unhealthy_threshold=1,
        breaker_failure_threshold=2, breaker_recovery_timeout=60,
    ),
)
"""


@pytest.fixture
def kernel() -> Iterator[KernelHarness]:
    k = KernelHarness()
    try:
        yield k
    finally:
        k.close()


@pytest.fixture
def loaded(kernel: KernelHarness) -> KernelHarness:
    kernel.execute(SETUP)
    return kernel


def snapshot_of(msg):
    return msg["content"]["data"]


def instances(snap, provider="memory"):
    return {i["instance"]: i for i in snap["providers"][provider]["instances"]}


def test_without_the_extension_the_kernel_closes_the_comm(kernel: KernelHarness) -> None:
    comm_id = kernel.comm_open({"type": "refresh"})
    msg = kernel.wait_for(
        lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == comm_id
    )
    assert msg["content"]["comm_id"] == comm_id


def test_load_announces_a_comm_and_pushes_snapshots(kernel: KernelHarness) -> None:
    msg_id = kernel.kc.execute("%load_ext gleitzeit_jupyter")
    opened = kernel.wait_for(
        lambda m: m["msg_type"] == "comm_open" and m["content"]["target_name"] == "gleitzeit"
    )
    assert opened["content"]["data"]["type"] == "hello"
    announced = opened["content"]["comm_id"]
    first = kernel.wait_for(is_comm_msg(announced, "snapshot"))
    assert snapshot_of(first)["providers"] == {}
    assert msg_id
    # a pool created later shows up in a pushed snapshot (membership event), no refresh sent
    kernel.execute(SETUP.replace("%load_ext gleitzeit_jupyter", ""))
    deadline = time.monotonic() + 5
    while True:
        snap = snapshot_of(kernel.wait_for(is_comm_msg(announced, "snapshot")))
        if "memory" in snap["providers"]:
            break
        assert time.monotonic() < deadline, "new pool never appeared in a snapshot"
    assert set(instances(snap)) == {"m0", "m1"}


def test_front_end_comm_gets_live_snapshots_and_counters_rise(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot")))
    assert snap["version"] == 1
    rows = instances(snap)
    assert set(rows) == {"m0", "m1"}
    before = sum(r["requests"] for r in rows.values())
    loaded.execute("for k in range(6): rt.run(pool.execute('echo', {'value': k}))")
    deadline = time.monotonic() + 5
    while True:
        snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot"), timeout=6))
        total = sum(r["requests"] for r in instances(snap).values())
        if total >= before + 6:
            break
        assert time.monotonic() < deadline, f"requests stayed at {total}"


def test_unhealthy_instance_is_pushed_without_any_request(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))
    loaded.execute("pool.resources['m1'].alive = False")
    deadline = time.monotonic() + 5
    while True:
        snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot"), timeout=6))
        if instances(snap)["m1"]["status"] == "unhealthy":
            break
        assert time.monotonic() < deadline, "m1 never reported unhealthy"
    assert instances(snap)["m0"]["status"] == "healthy"


def test_actions_drain_enable_reset_breaker_and_errors(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))

    def act(**data):
        loaded.comm_send(comm_id, {"type": "action", "provider": "memory", **data})
        result = loaded.wait_for(is_comm_msg(comm_id, "action_result"))["content"]["data"]
        snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot")))
        return result, snap

    result, snap = act(action="drain", instance="m0")
    assert result["ok"], result
    assert instances(snap)["m0"]["enabled"] is False
    loaded.execute("assert pool.get_instance('m0').enabled is False")

    result, snap = act(action="enable", instance="m0")
    assert result["ok"], result
    assert instances(snap)["m0"]["enabled"] is True

    # open m1's breaker for real: failing calls, then reset it from the "sidebar"
    loaded.execute(
        "from gleitzeit_jupyter.hub.instance import CircuitState\n"
        "pool.resources['m1'].fail = True\n"
        "for _ in range(4):\n"
        "    try:\n"
        "        rt.run(pool.execute('echo', {'value': 1}, instance='m1'))\n"
        "    except Exception:\n"
        "        pass\n"
        "pool.resources['m1'].fail = False\n"
        "assert pool.get_instance('m1').breaker_state is CircuitState.OPEN\n"
    )
    deadline = time.monotonic() + 5
    while instances(snap)["m1"]["breaker"] != "open":
        snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot")))
        assert time.monotonic() < deadline, "the open breaker was never pushed"
    result, snap = act(action="reset_breaker", instance="m1")
    assert result["ok"], result
    assert instances(snap)["m1"]["breaker"] == "closed"

    result, snap = act(action="strategy", value="round_robin")
    assert result["ok"], result
    assert snap["providers"]["memory"]["strategy"] == "round_robin"
    assert "least_loaded" in snap["strategies"]
    result, _ = act(action="strategy", value="fastest-please")
    assert result["ok"] is False and "unknown balancing strategy" in result["message"]

    result, _ = act(action="drain", instance="nope")
    assert result["ok"] is False and "drain failed" in result["message"]
    result, _ = act(action="explode", instance="m0")
    assert result["ok"] is False and "unknown action" in result["message"]
    loaded.comm_send(comm_id, {"type": "action", "provider": "ghost", "action": "drain"})
    result = loaded.wait_for(is_comm_msg(comm_id, "action_result"))["content"]["data"]
    assert result["ok"] is False and "no provider named 'ghost'" in result["message"]


def test_event_storm_is_throttled(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))
    loaded.drain_iopub(1.2)
    loaded.iopub.clear()
    # hundreds of hub events in ~3 s (strategy flips emit one event each)
    loaded.execute(
        "import time\n"
        "end = time.monotonic() + 3\n"
        "while time.monotonic() < end:\n"
        "    rt.loop.call_soon_threadsafe(pool.set_strategy, 'round_robin')\n"
        "    rt.loop.call_soon_threadsafe(pool.set_strategy, 'least_loaded')\n"
        "    time.sleep(0.005)\n"
    )
    start = time.monotonic()
    loaded.drain_iopub(0.5)
    elapsed = time.monotonic() - start + 3.5
    snaps = [m for m in loaded.iopub if is_comm_msg(comm_id, "snapshot")(m)]
    # ~1/s plus the post-cell push; far fewer than the events
    assert 2 <= len(snaps) <= elapsed + 2, len(snaps)


def test_refresh_answers_immediately(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    seq0 = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot")))["seq"]
    loaded.comm_send(comm_id, {"type": "refresh"})
    start = time.monotonic()
    snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot"), timeout=2))
    assert snap["seq"] > seq0
    assert time.monotonic() - start < 1.5


def test_unload_closes_comms_and_unregisters(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))
    loaded.execute("%unload_ext gleitzeit_jupyter")
    loaded.wait_for(lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == comm_id)
    again = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == again)
    loaded.execute(
        "import threading\n"
        "assert not [t for t in threading.enumerate() if t.name == 'gleitzeit-runtime']"
    )


def test_a_call_in_flight_is_pushed_while_the_cell_runs(loaded: KernelHarness) -> None:
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))
    # the cell blocks the kernel's main thread for 3 s on a call in flight; starting a call
    # emits no hub event, the bridge notices the change on its own
    msg_id = loaded.kc.execute("rt.run(pool.execute('echo', {'value': 1, 'latency': 3.0}))")
    loaded.wait_for(
        lambda m: (
            m["msg_type"] == "status"
            and m["content"]["execution_state"] == "busy"
            and m["parent_header"].get("msg_id") == msg_id
        )
    )
    start = time.monotonic()

    def in_flight(m) -> bool:
        if not is_comm_msg(comm_id, "snapshot")(m):
            return False
        return any(r["in_flight"] for r in instances(snapshot_of(m)).values())

    loaded.wait_for(in_flight, timeout=3)
    assert time.monotonic() - start < 2.5
    done = loaded.wait_for(
        lambda m: (
            m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
            and m["parent_header"].get("msg_id") == msg_id
        ),
        timeout=10,
    )
    assert done
    # and the finished call is pushed too
    snap = snapshot_of(loaded.wait_for(is_comm_msg(comm_id, "snapshot"), timeout=3))
    assert sum(r["requests"] for r in instances(snap).values()) >= 1


def test_gleitzeit_magic_controls_match_the_sidebar_actions(loaded: KernelHarness) -> None:
    """``%gleitzeit drain|enable|reset ID`` and the sidebar's buttons run the same control:
    the same state afterwards and the same message."""
    comm_id = loaded.comm_open({"type": "refresh"})
    loaded.wait_for(is_comm_msg(comm_id, "snapshot"))

    def act(**data):
        loaded.comm_send(comm_id, {"type": "action", "provider": "memory", **data})
        result = loaded.wait_for(is_comm_msg(comm_id, "action_result"))["content"]["data"]
        assert result["ok"], result
        return result["message"]

    def magic(line: str, says: str, holds: str) -> None:
        """Run ``%gleitzeit line``; it must print ``memory: says`` and leave ``holds`` true."""
        loaded.execute(
            "import io, contextlib\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            f"    get_ipython().run_line_magic('gleitzeit', {line!r})\n"
            f"assert out.getvalue().strip() == {'memory: ' + says!r}, out.getvalue()\n"
            f"assert {holds}"
        )

    m0 = "pool.get_instance('m0')"
    breaker = "pool.get_instance('m1').breaker.recorded_state.value"
    trip = "pool.get_instance('m1').breaker.trip()"

    drained = act(action="drain", instance="m0")
    loaded.execute(f"assert {m0}.enabled is False")
    enabled = act(action="enable", instance="m0")
    loaded.execute(f"assert {m0}.enabled is True")
    magic("drain m0", drained, f"{m0}.enabled is False")
    magic("enable m0", enabled, f"{m0}.enabled is True")

    loaded.execute(trip)
    reset = act(action="reset_breaker", instance="m1")
    loaded.execute(f"assert {breaker} == 'closed'")
    loaded.execute(trip)
    magic("reset m1", reset, f"{breaker} == 'closed'")
    # "reset ID" is not "reset" (which stops every pool)
    loaded.execute("assert 'memory' in rt.providers")
    loaded.execute(
        "try:\n    get_ipython().run_line_magic('gleitzeit', 'drain ghost')\n"
        "except Exception as e:\n    err = str(e)\n"
        "assert \"no instance 'ghost'\" in err, err"
    )
