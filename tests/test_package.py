"""The package's public surface (DESIGN.md's contract) and the hub → panel bridge."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import gleitzeit_jupyter
from gleitzeit_jupyter import HubProvider, UserError
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider

CONTRACT = (
    "HubProvider ResourceInstance ResourceStatus CircuitState OllamaProvider OllamaConfig "
    "PythonProvider DockerConfig OllamaProviderStreamlined PythonProviderStreamlined HubError "
    "NoResourceAvailable ResourceFailed UserError ExecutionTimeout"
).split()


def test_every_public_name_of_the_design_imports() -> None:
    for name in CONTRACT:
        assert getattr(gleitzeit_jupyter, name) is not None, name
    assert gleitzeit_jupyter.OllamaProviderStreamlined is gleitzeit_jupyter.OllamaProvider
    assert gleitzeit_jupyter.PythonProviderStreamlined is gleitzeit_jupyter.PythonProvider
    for name in ("NoResourceAvailable", "ResourceFailed", "UserError", "ExecutionTimeout"):
        assert issubclass(getattr(gleitzeit_jupyter, name), gleitzeit_jupyter.HubError)
    assert issubclass(gleitzeit_jupyter.ExecutionTimeout, gleitzeit_jupyter.ResourceFailed)


def test_importing_the_package_loads_neither_jupyter_nor_docker_nor_httpx() -> None:
    code = (
        "import sys, gleitzeit_jupyter, gleitzeit_jupyter.hub;"
        "heavy = [m for m in ('IPython', 'ipywidgets', 'docker', 'httpx', 'pandas')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_hub_itself_imports_nothing_from_jupyter() -> None:
    code = (
        "import sys, gleitzeit_jupyter.hub.provider;"
        "print([m for m in sys.modules if m.startswith(('IPython', 'ipywidgets', 'ipykernel',"
        " 'gleitzeit_jupyter.kernel', 'gleitzeit_jupyter.providers'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_provider_panel_is_a_live_widget_panel_of_that_pool() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    pool = MemoryProvider([MemoryConfig("a"), MemoryConfig("b")], health_check_interval=60)
    try:
        asyncio.run_coroutine_threadsafe(pool.initialize(), loop).result(10)
        panel = pool.panel()
        assert list(panel.rows) == ["a", "b", "ALL"]
        panel.close()
        assert len(pool._events) == 0
    finally:
        asyncio.run_coroutine_threadsafe(pool.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_panel_without_a_renderer_is_a_clear_user_error() -> None:
    saved = HubProvider.panel_factory
    HubProvider.panel_factory = None
    try:
        MemoryProvider([]).panel()
    except UserError as exc:
        assert "no panel renderer" in str(exc)
    else:
        raise AssertionError("panel() without a renderer must raise UserError")
    finally:
        HubProvider.panel_factory = saved
