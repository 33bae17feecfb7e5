"""Infrastructure faults against the real engine: containers killed or frozen from outside,
concurrency beyond the pool, leftovers of a dead kernel."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time

import docker
import pytest

from gleitzeit_jupyter.hub import ExecutionTimeout, ResourceFailed
from gleitzeit_jupyter.providers.sandbox import DockerConfig, PythonProvider
from gleitzeit_jupyter.providers.sandbox.engine import LABEL, OWNER_LABEL, ContainerSpec, Engine
from gleitzeit_jupyter.providers.sandbox.image import DEFAULT_IMAGE

from .conftest import container_of, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_container_killed_mid_run_is_replaced(
    pool: PythonProvider, docker_client: docker.DockerClient
) -> None:
    inst = pool.instances[0].id
    before = container_of(pool, inst)
    recycled = next(i for i in pool.status()["instances"] if i["instance"] == inst)["recycled"]
    task = asyncio.create_task(run(pool, "import time\ntime.sleep(30)", instance=inst))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(docker_client.api.kill, before)
    with pytest.raises(ResourceFailed, match="died"):
        await asyncio.wait_for(task, 30)
    after = container_of(pool, inst)
    assert after != before  # replaced before the failure was reported
    r = await run(pool, "print('alive')", instance=inst)
    assert r["stdout"] == "alive\n" and r["container"] == after
    row = next(i for i in pool.status()["instances"] if i["instance"] == inst)
    assert row["recycled"] == recycled + 1


async def test_unpinned_run_fails_over_when_its_container_dies(
    pool: PythonProvider, docker_client: docker.DockerClient
) -> None:
    # The container dies before the run starts: the hub retries on another instance.
    victim = pool.instances[1]
    await asyncio.to_thread(docker_client.api.kill, victim.metadata["container"])
    await asyncio.sleep(0.5)
    results = await asyncio.gather(*(run(pool, f"print({i})") for i in range(6)))
    assert sorted(int(r["stdout"]) for r in results) == list(range(6))


async def test_frozen_supervisor_is_replaced_after_the_timeout(
    pool: PythonProvider, docker_client: docker.DockerClient
) -> None:
    inst = pool.instances[0].id
    before = container_of(pool, inst)
    await asyncio.to_thread(docker_client.api.pause, before)
    started = time.perf_counter()
    with pytest.raises(ExecutionTimeout, match="stopped answering"):
        await run(pool, "print(1)", instance=inst, timeout=1)
    assert time.perf_counter() - started < 20
    assert container_of(pool, inst) != before
    r = await run(pool, "print('thawed')", instance=inst)
    assert r["stdout"] == "thawed\n"


async def test_twenty_concurrent_runs_on_five_containers(
    docker_client: docker.DockerClient,
) -> None:
    async with PythonProvider(max_containers=5, min_warm=5, timeout=30) as pool:
        code = "import time, os\ntime.sleep(0.3)\nprint(os.getpid())"
        started = time.perf_counter()
        results = await asyncio.gather(*(run(pool, code) for _ in range(20)))
        elapsed = time.perf_counter() - started
        assert all(r["exit_code"] == 0 and r["error"] is None for r in results)
        used = {r["instance"] for r in results}
        assert len(used) == 5 and len(pool.instances) == 5
        assert elapsed < 20 * 0.3  # ran in parallel, not one after another
        metrics = pool.metrics().set_index("instance")
        assert metrics.loc["ALL", "requests"] == 20
        assert set(metrics.columns) >= {"runs", "recycled", "p50_ms", "success_rate"}
        assert metrics.loc["ALL", "runs"] == metrics.drop("ALL")["runs"].sum() == 20
        assert pool.status()["totals"]["runs"] == 20


async def test_pool_scales_up_on_demand_and_not_past_the_maximum(
    docker_client: docker.DockerClient,
) -> None:
    async with PythonProvider(max_containers=3, min_warm=1) as pool:
        assert len(pool.instances) == 1
        await asyncio.gather(*(run(pool, "import time\ntime.sleep(0.5)") for _ in range(6)))
        assert len(pool.instances) == 3


async def test_leftovers_of_a_dead_kernel_are_removed_at_start(
    docker_client: docker.DockerClient,
) -> None:
    # A "kernel" that creates a pool and dies without shutting it down (SIGKILL-like exit).
    script = textwrap.dedent("""
        import asyncio, os
        from gleitzeit_jupyter.providers.sandbox import PythonProvider
        async def main():
            p = PythonProvider(max_containers=2, min_warm=2)
            await p.initialize()
            print(",".join(i.metadata["container"] for i in p.instances), flush=True)
            os._exit(0)
        asyncio.run(main())
    """)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = done.stdout.strip().split(",")
    assert len(out) == 2

    def ids() -> set[str]:
        cs = docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
        return {c.id[:12] for c in cs}

    # Their supervisors exit on stdin EOF, so those usually go by themselves. A leftover
    # that still runs (its channel held open) must be removed by the next pool's start:
    engine = Engine()
    spec = ContainerSpec(
        image=DEFAULT_IMAGE, labels={OWNER_LABEL: f"{socket.gethostname()}:999999999:1"}
    )
    orphan, sock = await asyncio.to_thread(engine.create, spec)
    try:
        assert orphan[:12] in ids()
        async with PythonProvider(max_containers=1, min_warm=1):
            assert not ({orphan[:12], *out} & ids())
    finally:
        sock.close()
        engine.close()


async def test_abandoned_run_is_stopped_and_the_session_survives_an_interrupt(
    pool: PythonProvider,
) -> None:
    # Ctrl-C in the notebook cancels the call: the worker is interrupted (a session keeps its
    # namespace, as in Jupyter) and the container serves the next call without replacement.
    name = "cancel-me"
    first = await run(pool, "kept = 'yes'", session=name)
    before = container_of(pool, first["instance"])
    call = asyncio.create_task(run(pool, "import time\ntime.sleep(60)", session=name))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    started = time.perf_counter()
    r = await run(pool, "print(kept)", session=name)
    assert r["stdout"] == "yes\n" and r["session_new"] is False
    assert time.perf_counter() - started < 5
    assert container_of(pool, r["instance"]) == before
    # a fresh run that ignores KeyboardInterrupt is killed instead, and the slot still serves
    inst = pool.instances[0].id
    stubborn = (
        "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass"
    )
    call = asyncio.create_task(run(pool, stubborn, instance=inst))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    r = await run(pool, "print('next')", instance=inst)
    assert r["stdout"] == "next\n"


async def test_containers_are_added_and_removed_at_run_time(
    docker_client: docker.DockerClient,
) -> None:
    async with PythonProvider(max_containers=4, min_warm=1) as pool:
        added = await pool.add_resource()
        by_hand = await pool.add_resource(DockerConfig(mem_limit="256m"))
        assert len(pool.instances) == 3 and by_hand.metadata["mem_limit"] == "256m"
        limit = docker_client.api.inspect_container(by_hand.metadata["container"])
        assert limit["HostConfig"]["Memory"] == 256 * 1024 * 1024
        r = await run(pool, "print('hi')", instance=added.id)
        assert r["stdout"] == "hi\n"
        gone = added.metadata["container"]
        await pool.remove_resource(added.id)
        assert len(pool.instances) == 2
        cs = docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
        assert gone not in {c.id[:12] for c in cs}


async def test_a_pool_restarts_after_shutdown_and_leaves_nothing_behind(
    docker_client: docker.DockerClient,
) -> None:
    pool = PythonProvider(max_containers=1, min_warm=1)
    seen = []
    for i in range(2):
        await pool.initialize()
        r = await run(pool, f"print({i})")
        assert r["stdout"] == f"{i}\n"
        seen.append(r["container"])
        await pool.shutdown()
    assert seen[0] != seen[1]
    cs = docker_client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
    assert not set(seen) & {c.id[:12] for c in cs}
