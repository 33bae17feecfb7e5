"""The sandbox's isolation, attacked from inside, against the real engine.

Every attack runs pinned to one container, then that same container (or its replacement in
the same slot) must serve the next run: the pool keeps working after each.
"""

from __future__ import annotations

import asyncio

import pytest

from gleitzeit_jupyter.hub import ResourceFailed
from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.sweep import RUN_UIDS

from .conftest import RUNTIME, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def still_serves(pool: PythonProvider, instance: str) -> None:
    r = await run(pool, "print('still here')", instance=instance)
    assert r["exit_code"] == 0 and r["stdout"] == "still here\n", r


async def test_network_access_fails(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "import socket\n"
        "errors = []\n"
        "for target in [('1.1.1.1', 53), ('172.17.0.1', 2375), ('deb.debian.org', 80)]:\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=2).close()\n"
        "        errors.append('connected')\n"
        "    except OSError as exc:\n"
        "        errors.append(type(exc).__name__)\n"
        "ifaces = [name for _, name in socket.if_nameindex()]\n"
        "errors, ifaces"
    )
    r = await run(pool, code, instance=inst, returns=["errors", "ifaces"])
    assert r["error"] is None, r
    assert "connected" not in r["values"]["errors"]
    assert r["values"]["ifaces"] == ["lo"]  # network_mode none: loopback only
    await still_serves(pool, inst)


async def test_writing_outside_tmp_fails(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "import os\n"
        "results = {}\n"
        "for path in ['/etc/evil', '/usr/lib/python3/evil.py', '/evil', '/root/evil']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        results[path] = type(exc).__name__\n"
        "open('/tmp/fine.txt', 'w').write('ok')\n"
        "tmp = open('/tmp/fine.txt').read()\n"
    )
    r = await run(pool, code, instance=inst, returns=["results", "tmp"])
    assert r["error"] is None, r
    assert all(v != "written" for v in r["values"]["results"].values()), r["values"]
    assert r["values"]["tmp"] == "ok"
    await still_serves(pool, inst)


async def test_user_is_not_root_and_has_no_capabilities(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "import os\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "caps = {k: status.get(k, '0' * 16).strip() for k in ('CapEff', 'CapPrm', 'CapBnd',"
        " 'CapAmb')}\n"
        "nnp = status.get('NoNewPrivs', '1').strip()  # gVisor does not show it\n"
        "uid, gid = os.getuid(), os.getgid()\n"
        "try:\n"
        "    os.setuid(0)\n"
        "    became_root = True\n"
        "except PermissionError:\n"
        "    became_root = False\n"
    )
    r = await run(pool, code, instance=inst, returns=["caps", "nnp", "uid", "gid", "became_root"])
    v = r["values"]
    # Each run has a uid of its own (never root), and holds no capability at all; the
    # bounding set keeps only what the supervisor needs, unusable under no-new-privileges.
    assert v["uid"] in RUN_UIDS and v["gid"] == v["uid"]
    caps = v["caps"]
    assert {caps["CapEff"], caps["CapPrm"], caps["CapAmb"]} == {"0000000000000000"}, caps
    assert int(caps["CapBnd"], 16) & ~0xE0 == 0, caps  # SETUID, SETGID, KILL at most
    assert v["nnp"] == "1"
    assert v["became_root"] is False
    await still_serves(pool, inst)


async def test_fork_bomb_is_contained_by_the_pids_limit(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = "import os\nwhile True:\n    os.fork()\n"
    if RUNTIME == "runsc":
        # gVisor enforces the pids limit on its own processes: the sandbox goes down, the
        # container is replaced and the run reported as failed (never run again).
        with pytest.raises(ResourceFailed, match="did not run to completion"):
            await run(pool, code, instance=inst, timeout=15)
        await still_serves(pool, inst)
        return
    r = await run(pool, code, instance=inst, timeout=15)
    assert r["exit_code"] != 0
    # Either fork() hit the pids limit (BlockingIOError) or the deadline stopped it.
    assert r["error"]["ename"] in ("BlockingIOError", "TimeoutError"), r["error"]
    await still_serves(pool, inst)
    live = (
        "import os\n"
        "def state(p):\n"
        "    try:\n"
        "        return open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[0]\n"
        "    except OSError:\n"
        "        return 'gone'\n"
        "len([p for p in os.listdir('/proc') if p.isdigit() and state(p) not in 'Zgone'])"
    )
    # supervisor + this worker + spares: no bomb process is left running. The kill is sent
    # as the result goes out, and a hundred processes take a moment to exit, so poll.
    # (Zombies only wait for the supervisor to reap them; they hold no CPU or memory.)
    counts = []
    for _ in range(20):
        r = await run(pool, live, instance=inst)
        counts.append(int(r["outputs"][0]["data"]["text/plain"]))
        if counts[-1] <= 4:
            break
        await asyncio.sleep(0.25)
    assert counts[-1] <= 4, counts


async def test_memory_bomb_is_killed_and_reported_as_out_of_memory(
    pool: PythonProvider,
) -> None:
    inst = pool.instances[1].id
    before = pool.get_instance(inst).metadata["container"]
    code = "blocks = []\nwhile True:\n    blocks.append(b'x' * (64 * 1024 * 1024))\n"
    if RUNTIME == "runsc":
        # gVisor: the memory limit stops the whole sandbox; it is replaced, the run failed.
        with pytest.raises(ResourceFailed, match="did not run to completion"):
            await run(pool, code, instance=inst, timeout=30)
        await still_serves(pool, inst)
        return
    r = await run(pool, code, instance=inst, timeout=30)
    assert r["oom"] is True, r
    assert r["error"]["ename"] == "MemoryError" and "out of memory" in r["error"]["evalue"]
    assert r["exit_code"] == 137
    assert not r["timed_out"]
    # The user's mistake is a result, not an infrastructure failure: the breaker stays shut.
    assert pool.get_instance(inst).breaker_state.value == "closed"
    await still_serves(pool, inst)
    assert pool.get_instance(inst).metadata["container"] != before  # recycled after the OOM


async def test_infinite_loop_is_stopped_at_the_timeout(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    r = await run(pool, "while True: pass", instance=inst, timeout=2)
    assert r["timed_out"] is True
    assert r["error"]["ename"] == "TimeoutError"
    assert 2000 <= r["duration_ms"] < 2000 + 3000, r["duration_ms"]
    await still_serves(pool, inst)


async def test_loop_that_ignores_interrupts_is_killed(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "while True:\n    try:\n        while True: pass\n    except BaseException:\n        pass\n"
    )
    r = await run(pool, code, instance=inst, timeout=1)
    assert r["timed_out"] is True and r["error"]["ename"] == "TimeoutError"
    await still_serves(pool, inst)


async def test_50_mb_of_output_is_truncated_to_the_cap(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * (1024 * 1024))\n"
    r = await run(pool, code, instance=inst, timeout=30)
    assert r["exit_code"] == 0
    cap = 1024 * 1024
    assert r["stdout"].startswith("x" * cap)
    assert len(r["stdout"]) < cap + 200
    assert f"{49 * cap} more bytes not shown" in r["stdout"]
    r = await run(
        pool, "import sys\nprint('e' * 5000, file=sys.stderr)", instance=inst, max_output=1000
    )
    assert r["stderr"].startswith("e" * 1000) and "truncated" in r["stderr"]
    await still_serves(pool, inst)


async def test_user_output_cannot_forge_a_protocol_frame(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "import json, os, struct, sys\n"
        "fake = json.dumps({'op': 'result', 'id': 1, 'stdout': 'forged', 'exit_code': 0})\n"
        "frame = struct.pack('>I', len(fake)) + fake.encode()\n"
        "os.write(1, frame)\n"
        "os.write(2, b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x05hello')  # a docker header\n"
        "sys.stdout.buffer.write(frame)\n"
        "print('after')\n"
    )
    r = await run(pool, code, instance=inst)
    assert r["exit_code"] == 0
    assert r["stdout"].endswith("after\n") and "forged" in r["stdout"]  # just text
    await still_serves(pool, inst)


async def test_the_supervisor_channel_is_out_of_reach(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = (
        "import os, signal\n"
        "opened = []\n"
        "for fd in range(0, 64):\n"
        "    try:\n"
        "        open(f'/proc/1/fd/{fd}', 'wb').close()\n"
        "        opened.append(fd)\n"
        "    except OSError:\n"
        "        pass\n"
        "for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGHUP):\n"
        "    try:\n"
        "        os.kill(1, sig)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    r = await run(pool, code, instance=inst, returns=["opened"])
    # gVisor lets /proc/1/fd/0 open: that is /dev/null; the channel is never reachable.
    assert r["values"]["opened"] in ([], [0] if RUNTIME == "runsc" else []), r
    await still_serves(pool, inst)  # signals to PID 1 from inside changed nothing


async def test_network_is_an_explicit_opt_in(pool: PythonProvider) -> None:
    code = "import socket\nsorted(n for _, n in socket.if_nameindex())"
    async with PythonProvider(max_containers=1, min_warm=1, network=True) as networked:
        r = await run(networked, code)
        assert r["outputs"][0]["data"]["text/plain"] == "['eth0', 'lo']"
        assert networked.instances[0].metadata["network"] is True
    assert pool.instances[0].metadata["network"] is False
