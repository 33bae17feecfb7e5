"""``%gleitzeit save`` / ``load`` across a real kernel restart, against two Ollama stand-ins."""

from __future__ import annotations

from widget_client import Kernel

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def _setup(k: Kernel, url: str) -> None:
    k.execute(
        "%load_ext gleitzeit_jupyter\n"
        f"%config Gleitzeit.ollama_hosts = ['{url}']\n"
        "%config Gleitzeit.default_model = 'llama3.2'\n"
    )


def _stdout(msgs) -> str:
    return "".join(m["content"]["text"] for m in msgs if m["header"]["msg_type"] == "stream")


def test_pool_and_history_come_back_after_a_kernel_restart(
    tmp_path, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    path = tmp_path / "pools.sqlite"
    k = Kernel()
    try:
        _setup(k, standin.url)
        k.execute(f"%gleitzeit add ollama {standin2.url}")
        k.execute("for i in range(12):\n    _ = %llm say {i}")
        before = k.value(
            "m = %gleitzeit metrics\n"
            "m = m.set_index('instance')\n"
            "(sorted(m.index), int(m.loc['ALL', 'requests']), float(m.loc['ALL', 'p95_ms']))"
        )
        hist_rows = k.value(
            "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
            "len(get_runtime().providers['ollama'].metrics_history())"
        )
        out = _stdout(k.execute(f"%gleitzeit save {path}"))
        assert "saved ollama (2 instances)" in out

        k.km.restart_kernel(now=False)
        k.kc.wait_for_ready(timeout=60)
        # Today's configuration names only the first server.
        _setup(k, standin.url)
        out = _stdout(k.execute(f"%gleitzeit load {path}"))
        assert "ollama: 2 instance(s) restored" in out, out
        after = k.value(
            "m = %gleitzeit metrics\n"
            "m = m.set_index('instance')\n"
            "(sorted(m.index), int(m.loc['ALL', 'requests']), float(m.loc['ALL', 'p95_ms']))"
        )
        assert after[0] == before[0]  # both servers are back in the pool
        assert after[1] == before[1] == 12
        assert abs(after[2] - before[2]) <= 0.02 * before[2]
        assert (
            k.value(
                "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
                "len(get_runtime().providers['ollama'].metrics_history())"
            )
            == hist_rows
        )
        # and the restored pool serves
        k.execute("_ = %llm hello again")
        again = k.value(
            "m = %gleitzeit metrics\nint(m.set_index('instance').loc['ALL', 'requests'])"
        )
        assert again == 13
        # a bad path is one clear line, not a traceback
        msgs = k.execute(f"%gleitzeit load {tmp_path / 'nope.sqlite'}", allow_error=True)
        text = _stdout(msgs) + "".join(
            "\n".join(m["content"]["traceback"]) for m in msgs if m["header"]["msg_type"] == "error"
        )
        assert "no saved pools" in text
        assert "persistence.py" not in text  # no traceback from inside the library
    finally:
        k.close()
