"""Values in and out, rich outputs, and the rule that nothing from the sandbox can run code
in the kernel, against the real engine."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import docker
import numpy as np
import pandas as pd
import pytest

from gleitzeit_jupyter.hub import NoResourceAvailable, UserError
from gleitzeit_jupyter.providers.sandbox import PythonProvider

from .conftest import run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_result_shape_and_last_expression(pool: PythonProvider) -> None:
    r = await run(pool, "print('out')\nimport sys\nprint('err', file=sys.stderr)\n6 * 7")
    for key in (
        "stdout",
        "stderr",
        "exit_code",
        "error",
        "timed_out",
        "outputs",
        "values",
        "duration_ms",
        "instance",
    ):
        assert key in r, key
    assert (r["stdout"], r["stderr"], r["exit_code"], r["error"]) == ("out\n", "err\n", 0, None)
    assert r["outputs"] == [{"type": "execute_result", "data": {"text/plain": "42"}}]


async def test_user_errors_are_results_and_do_not_trip_the_breaker(
    pool: PythonProvider,
) -> None:
    inst = pool.instances[0].id
    for _ in range(pool.breaker_failure_threshold + 2):
        r = await run(pool, "def f():\n    return 1 / 0\nf()", instance=inst)
        assert r["exit_code"] == 1
        assert r["error"]["ename"] == "ZeroDivisionError"
        assert 'File "<sandbox>", line 2, in f' in r["error"]["traceback"]
    assert pool.get_instance(inst).breaker_state.value == "closed"
    r = await run(pool, "import sys\nsys.exit(3)", instance=inst)
    assert r["exit_code"] == 3 and r["error"] is None


async def test_runs_do_not_share_state(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    await run(pool, "leak = 1\nimport json\njson.secret = 2", instance=inst)
    r = await run(
        pool, "import json\n(('leak' in globals()), hasattr(json, 'secret'))", instance=inst
    )
    assert r["outputs"][0]["data"]["text/plain"] == "(False, False)"


async def test_inputs_and_values_round_trip(pool: PythonProvider) -> None:
    df = pd.DataFrame(
        {
            "a": [1, 2, 3],
            "b": [0.5, 1.5, 2.5],
            "c": ["x", "y", "z"],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        }
    )
    inputs = {
        "df": df,
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
        "blob": b"\x00\x01",
        "cfg": {"k": [1, 2.5, None, "s"]},
    }
    code = (
        "df2 = df.assign(d=df.a * 2)\n"
        "arr2 = arr.T * 1.5\n"
        "blob2 = blob + b'!'\n"
        "cfg2 = dict(cfg, n=len(cfg['k']))\n"
        "s = df2['d']\n"
    )
    r = await run(pool, code, inputs=inputs, returns=["df2", "arr2", "blob2", "cfg2", "s"])
    assert r["error"] is None, r
    v = r["values"]
    pd.testing.assert_frame_equal(v["df2"], df.assign(d=df.a * 2), check_dtype=False)
    assert v["df2"]["t"].dtype.kind == "M"
    np.testing.assert_array_equal(v["arr2"], inputs["arr"].T * 1.5)
    assert v["blob2"] == b"\x00\x01!"
    assert v["cfg2"] == {"k": [1, 2.5, None, "s"], "n": 4}
    assert list(v["s"]) == [2, 4, 6] and v["s"].name == "d"


async def test_value_that_cannot_travel_safely_is_a_clear_error(pool: PythonProvider) -> None:
    r = await run(pool, "class Thing: pass\nt = Thing()", returns=["t"])
    assert r["error"]["ename"] == "CodecError"
    assert "Thing" in r["error"]["evalue"] and "'t'" in r["error"]["evalue"]
    with pytest.raises(UserError, match="set"):
        await run(pool, "x", inputs={"x": {1, 2}})


async def test_rich_outputs_are_mime_bundles(pool: PythonProvider) -> None:
    r = await run(pool, "import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    data = r["outputs"][0]["data"]
    assert "<table" in data["text/html"] and "a" in data["text/plain"]
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "display({'shown': True})\n"
    )
    r = await run(pool, code, timeout=60)
    assert r["error"] is None, r
    kinds = [o["data"] for o in r["outputs"]]
    assert {"text/plain": "{'shown': True}"} in kinds
    png = next(d["image/png"] for d in kinds if "image/png" in d)
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")


async def test_nothing_returned_can_execute_code_in_the_kernel(
    pool: PythonProvider, tmp_path: object
) -> None:
    """User code owns its worker's result pipe, so it can forge its own result frame; the
    kernel must still only ever decode data (no pickle, no object arrays, no Arrow
    extension types) and refuse the rest."""
    marker = f"/tmp/gleitzeit-pwned-{uuid.uuid4().hex}"
    code = (
        "import os, json, struct, pickle, base64\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\n"
        "payload = base64.b64encode(pickle.dumps(Evil())).decode()\n"
        "values = {\n"
        "  'p': {'t': 'pickle', 'b64': payload},\n"
        "  'o': {'t': 'ndarray', 'dtype': '|O', 'shape': [1], 'b64': payload},\n"
        "  'd': {'t': 'dataframe', 'fmt': 'pickle', 'b64': payload},\n"
        "}\n"
        "msg = json.dumps({'exit_code': 0, 'error': None, 'outputs': [], 'values': values})\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, struct.pack('>I', len(msg)) + msg.encode())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    r = await run(pool, code, returns=["p", "o", "d"])
    assert not await asyncio.to_thread(os.path.exists, marker)
    assert r["error"] is not None and r["error"]["ename"] == "CodecError", r
    assert r["values"] == {}
    # and the honest way: a pickled object is refused inside the sandbox already
    r = await run(
        pool,
        f"import os\nclass E:\n    def __reduce__(self):\n"
        f"        return (os.system, ('touch {marker}',))\ne = E()",
        returns=["e"],
    )
    assert r["error"]["ename"] == "CodecError"
    assert not await asyncio.to_thread(os.path.exists, marker)


async def test_sessions_keep_state_and_reset(pool: PythonProvider) -> None:
    name = f"s-{uuid.uuid4().hex[:6]}"
    r1 = await run(pool, "counter = 1", session=name)
    assert r1["session_new"] is True
    r2 = await run(pool, "counter += 1\ncounter", session=name)
    assert r2["outputs"][0]["data"]["text/plain"] == "2"
    assert r2["instance"] == r1["instance"] and r2["session_new"] is False
    # the leased container is out of unpinned rotation while the session holds it
    others = {(await run(pool, "1"))["instance"] for _ in range(4)}
    assert r1["instance"] not in others
    # held by the session: never reaped as an idle scaled-up container
    assert pool.get_instance(r1["instance"]).origin == "session"
    # ... and it shows as a healthy container holding the session, not as a drained one
    row = next(r for r in pool.status()["instances"] if r["instance"] == r1["instance"])
    assert row["status"] == "healthy" and row["enabled"] and row["session"] == name
    reset = await pool.execute("python/reset", {"session": name})
    assert reset["reset"] is True
    r3 = await run(pool, "'counter' in globals()", session=name)
    assert r3["outputs"][0]["data"]["text/plain"] == "False"


async def test_a_forged_result_cannot_break_the_call_or_smuggle_javascript(
    pool: PythonProvider,
) -> None:
    inst = pool.instances[0].id
    code = (
        "import os, json, struct\n"
        "outputs = [{'type': 'display_data', 'data': {\n"
        "    'application/javascript': 'alert(1)', 'text/plain': 'shown', 'image/png': 7}},\n"
        "    'junk', {'data': None}]\n"
        "msg = json.dumps({'exit_code': 'not a number', 'error': 'nope', 'outputs': outputs})\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, struct.pack('>I', len(msg)) + msg.encode())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    r = await run(pool, code, instance=inst)
    # the malformed frame fails the run as a whole: nothing of it is shown
    assert not any("application/javascript" in o["data"] for o in r["outputs"])
    assert r["error"]["ename"] == "ProtocolError" and r["exit_code"] == 1
    assert pool.get_instance(inst).breaker_state.value == "closed"
    r = await run(pool, "print('fine')", instance=inst)
    assert r["stdout"] == "fine\n"


async def test_a_call_when_every_container_is_held_by_a_session_says_so(
    docker_client: docker.DockerClient,
) -> None:
    async with PythonProvider(max_containers=1, min_warm=1) as single:
        await run(single, "x = 1", session="analysis")
        with pytest.raises(NoResourceAvailable, match="held by sessions \\(analysis\\)"):
            await run(single, "1")
        r = await run(single, "x + 1", session="analysis")  # the session itself still runs
        assert r["outputs"][0]["data"]["text/plain"] == "2"
