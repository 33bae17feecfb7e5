"""The direct channel to a local container (a unix socket past dockerd) and the attach stream
it falls back to: who may connect, what is left for user code to find, and that values move
the same either way (real sockets, real engine)."""

from __future__ import annotations

import asyncio
import os
import socket

import numpy as np
import pandas as pd
import pytest

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.channel import ChannelListener, is_local

from .conftest import RUNTIME, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


def connect(listener: ChannelListener, token: bytes) -> socket.socket:
    path = os.path.join(listener.dir, "chan.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(token)
    return sock


async def test_only_the_peer_with_the_token_becomes_the_channel() -> None:
    loop = asyncio.get_running_loop()
    listener = ChannelListener()
    accepted = asyncio.create_task(listener.accept())
    intruder = connect(listener, b"0" * len(listener.token))
    intruder.setblocking(False)
    # A wrong token is dropped (closed on the intruder); the listener waits on.
    assert await asyncio.wait_for(loop.sock_recv(intruder, 1), 10) == b""
    assert not accepted.done()
    peer = connect(listener, listener.token.encode())
    conn = await asyncio.wait_for(accepted, 10)
    try:
        assert not await asyncio.to_thread(os.path.exists, listener.dir)  # nothing to reach
        peer.sendall(b"ping")
        assert await loop.sock_recv(conn, 4) == b"ping"
    finally:
        conn.close()
        peer.close()
        intruder.close()


async def test_peers_that_say_nothing_do_not_hold_the_channel_up() -> None:
    # Anyone on the host who can reach the socket may connect and stay silent; the token check
    # of one peer must not keep the supervisor (queued behind it, or blocked in connect once
    # the backlog is full) waiting. With an hour per silent peer, only a concurrent check ends.
    listener = ChannelListener()
    accepted = asyncio.create_task(listener.accept(token_timeout=3600))
    silent: list[socket.socket] = []

    async def intrude_then_connect() -> socket.socket:
        for _ in range(8):  # more than the listen backlog
            silent.append(await asyncio.to_thread(connect, listener, b""))
        peer = await asyncio.to_thread(connect, listener, listener.token.encode())
        silent.append(peer)
        return await accepted

    try:
        conn = await asyncio.wait_for(intrude_then_connect(), 60)
        conn.close()
    finally:
        accepted.cancel()
        listener.close()
        for sock in silent:
            sock.close()


async def test_only_engines_on_this_machine_get_the_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert is_local(None) and is_local("unix:///var/run/docker.sock")
    assert not is_local("tcp://10.0.0.5:2376") and not is_local("ssh://user@host")
    monkeypatch.setenv("DOCKER_HOST", "ssh://user@host")
    assert not is_local(None)


async def test_user_code_finds_no_token_and_no_socket(pool: PythonProvider) -> None:
    if RUNTIME is None:  # gVisor refuses host sockets: there the attach stream is used
        assert all(i.handle.container.direct for i in pool.instances)
    code = (
        "import os\n"
        "env = sorted(k for k in os.environ if 'CHANNEL' in k)\n"
        "mount = os.listdir('/run/gleitzeit') if os.path.isdir('/run/gleitzeit') else []\n"
    )
    r = await run(pool, code, returns=["env", "mount"])
    assert r["error"] is None, r["error"]
    assert r["values"] == {"env": [], "mount": []}


async def test_values_move_the_same_over_the_attach_stream() -> None:
    attach = PythonProvider(max_containers=1, direct_channel=False, runtime=RUNTIME)
    await attach.initialize()
    try:
        assert not attach.instances[0].handle.container.direct
        df = pd.DataFrame(
            {"a": np.arange(200_000), "s": pd.Categorical(["x", "y"] * 100_000)},
        )
        r = await run(attach, "back = df", inputs={"df": df}, returns=["back"])
        assert r["error"] is None, r["error"]
        pd.testing.assert_frame_equal(r["values"]["back"], df)
    finally:
        await attach.close()
