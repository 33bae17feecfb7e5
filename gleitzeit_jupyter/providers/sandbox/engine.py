"""Docker engines: one SDK client per host, a dedicated thread pool, hardened container specs.

The docker SDK is blocking, so every call goes through :meth:`Engine.call` on a small
dedicated executor: the event loop never blocks, and a slow engine cannot starve other users of
the default executor.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import LogConfig, Ulimit

__all__ = ["LABEL", "ContainerSpec", "Engine", "bootstrap_command", "owner_label"]

T = TypeVar("T")
LABEL = "gleitzeit.sandbox"
OWNER_LABEL = "gleitzeit.sandbox.owner"
POOL_LABEL = "gleitzeit.sandbox.pool"
# The supervisor starts as root so that it can give every run a uid of its own (sweep.py),
# with no capability but these three; the workers never hold any.
SANDBOX_USER = "0:0"
SUPERVISOR_CAPS = ["SETUID", "SETGID", "KILL"]


@dataclass
class ContainerSpec:
    """Resource limits and security settings of one sandbox container."""

    image: str
    mem_limit: str = "512m"
    cpus: float = 1.0
    pids_limit: int = 128
    network: bool | str = False  # True: docker's default bridge; a name: that network
    tmpfs_size: str = "64m"
    shm_size: str = "8m"
    runtime: str | None = None
    nofile: int = 256
    fsize: int = 64 * 1024 * 1024
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    #: Host directories mounted in (the direct channel's socket directory, read-only).
    binds: dict[str, dict[str, str]] = field(default_factory=dict)


def _module_source(name: str) -> str:
    return (Path(__file__).parent / f"{name}.py").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def bootstrap_command() -> list[str]:
    """``python3 -c`` program installing our modules and starting the supervisor.

    The supervisor travels on the command line rather than inside the image, so it always
    matches the installed package and the image never needs a rebuild for it.
    """
    modules = [
        (f"gleitzeit_{m}", _module_source(m))
        for m in (
            "protocol",
            "arrow_ipc",
            "codec",
            "values",
            "display_shim",
            "workdir",
            "worker",
            "sweep",
            "procs",
            "usage",
            "relay",
            "endings",
            "preload",
            "finish",
            "startup",
        )
    ]
    program = (
        "import sys, types\n"
        "def _load(name, src):\n"
        "    m = types.ModuleType(name); m.__file__ = '<' + name + '>'\n"
        "    sys.modules[name] = m\n"
        "    exec(compile(src, m.__file__, 'exec'), m.__dict__)\n"
        "    return m\n"
    )
    for name, src in modules:
        program += f"_load({name!r}, {src!r})\n"
    program += f"_load('gleitzeit_supervisor', {_module_source('supervisor')!r}).main()\n"
    # -I: ignore PYTHON* variables and the user site; the sandbox gets no host influence.
    return ["python3", "-I", "-c", program]


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_label() -> str:
    """host:pid:start of this process, so a later kernel can tell our leftovers are dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for owners on this host; None when the owner lives elsewhere."""
    try:
        host, pid, start = owner.rsplit(":", 2)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    return Path(f"/proc/{pid}").exists() and _process_start(int(pid)) == start


class Engine:
    """One docker engine (``base_url`` None: the environment's, i.e. ``DOCKER_HOST``)."""

    def __init__(self, base_url: str | None = None, *, threads: int = 8) -> None:
        self.base_url = base_url
        self._client: docker.DockerClient | None = None
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None  # created on first use, see close()

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            # timeout: a hung engine must surface as an error, not a stuck thread.
            if self.base_url:
                self._client = docker.DockerClient(base_url=self.base_url, timeout=60)
            else:
                self._client = docker.from_env(timeout=60)
        return self._client

    @property
    def name(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix="gleitzeit-docker"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # ---- blocking helpers (run them through call()) ------------------------------------
    def create(self, spec: ContainerSpec, name: str | None = None) -> tuple[str, Any]:
        """Create, attach and start a hardened container; return (id, attach socket)."""
        api = self.client.api
        if spec.network is True:
            network_mode = "bridge"
        elif isinstance(spec.network, str) and spec.network:
            network_mode = spec.network
        else:
            network_mode = "none"
        host_config = api.create_host_config(
            network_mode=network_mode,
            runtime=spec.runtime,
            shm_size=spec.shm_size,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={spec.tmpfs_size},mode=1777"},
            binds=spec.binds or None,
            cap_drop=["ALL"],
            cap_add=SUPERVISOR_CAPS,
            security_opt=["no-new-privileges"],
            pids_limit=spec.pids_limit,
            mem_limit=spec.mem_limit,
            memswap_limit=spec.mem_limit,  # memory+swap = memory: no swapping around the limit
            nano_cpus=int(spec.cpus * 1e9),
            ulimits=[
                Ulimit(name="nofile", soft=spec.nofile, hard=spec.nofile),
                Ulimit(name="fsize", soft=spec.fsize, hard=spec.fsize),
                Ulimit(name="core", soft=0, hard=0),
            ],
            log_config=LogConfig(type="none"),
            auto_remove=True,
            ipc_mode="private",
            init=False,  # the supervisor is PID 1 on purpose (signal immunity, reaping)
        )
        env = {
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            **spec.environment,
        }
        labels = {LABEL: "1", OWNER_LABEL: owner_label(), **spec.labels}
        config = api.create_container_config(
            spec.image,
            bootstrap_command(),
            user=SANDBOX_USER,
            environment=env,
            stdin_open=True,
            tty=False,
            labels=labels,
            working_dir="/tmp",
            host_config=host_config,
            network_disabled=network_mode == "none",
        )
        # StdinOnce: when the kernel's attach socket closes (kernel died), the supervisor's
        # stdin reaches EOF, it exits, and auto_remove deletes the container.
        config["StdinOnce"] = True
        cid = api.create_container_from_config(config, name)["Id"]
        try:
            sock = api.attach_socket(
                cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            api.start(cid)
        except Exception:
            self.remove(cid)
            raise
        return cid, sock

    def remove(self, cid: str) -> None:
        try:
            self.client.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise

    def kill(self, cid: str) -> None:
        try:
            self.client.api.kill(cid)
        except docker.errors.APIError:
            pass

    def runtimes(self) -> set[str]:
        """The OCI runtimes this engine knows (``runc``, and ``runsc`` where gVisor is set up)."""
        return set((self.client.info().get("Runtimes") or {}).keys())

    def inspect_state(self, cid: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.api.inspect_container(cid)["State"])
        except docker.errors.NotFound:
            return None

    def remove_stale(self) -> int:
        """Remove sandbox containers whose kernel is gone (or that have stopped)."""
        removed = 0
        for c in self.client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
            owner = (c.get("Labels") or {}).get(OWNER_LABEL, "")
            alive = _owner_alive(owner)
            if c.get("State") in ("exited", "dead") or alive is False:
                self.remove(c["Id"])
                removed += 1
        return removed

    def ensure_image(self, image: str, source: Engine | None = None) -> None:
        """Make ``image`` present here, copying it from ``source`` (no registry to pull from)."""
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            if source is None or source is self:
                raise
        data = source.client.images.get(image).save(named=True)
        self.client.images.load(data)

    def close(self) -> None:
        """Release the client and the threads; the engine can be used again afterwards."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
