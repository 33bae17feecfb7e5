"""Container slots: a pool instance holds one container and replaces it in place.

A slot keeps its id, metrics and breaker across replacements (``recycled`` counts them), so a
container that died, ran out of memory or served ``max_runs_per_container`` runs is swapped
without the pool changing shape.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ...hub import ResourceFailed, ResourceInstance
from .container import SandboxContainer
from .engine import POOL_LABEL, ContainerSpec, Engine
from .image import DEFAULT_IMAGE
from .sessions import SessionLeases

__all__ = ["DockerConfig", "Slot", "SlotsMixin"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DockerConfig:
    """One container slot: which engine, which image, which limits."""

    image: str = DEFAULT_IMAGE
    docker_host: str | None = None
    mem_limit: str = "512m"
    cpus: float = 1.0
    pids_limit: int = 128
    network: bool | str = False  # True: docker's default bridge; a name: that network
    tmpfs_size: str = "64m"
    preload: tuple[str, ...] = ()
    runtime: str | None = None  # e.g. "runsc" (gVisor); None: the engine's default
    slot: int = 0  # makes every slot's config distinct (the hub keys resources by config)


@dataclass(eq=False)
class Slot:
    engine: Engine
    config: DockerConfig
    container: SandboxContainer | None = None
    replacing: asyncio.Task[None] | None = None
    runs: int = 0
    recycled: int = 0
    cpu_ms: float = 0.0  # CPU time of all runs here, as the supervisor measured it
    peak_memory_mb: float = 0.0  # the largest peak of any one run here
    origin: str = "explicit"  # the hub's origin while a session holds the slot


def _log_failure(task: asyncio.Task[None]) -> None:
    # A background replacement that failed is retried by the next call or health check;
    # reading the exception here keeps asyncio from reporting it as never retrieved.
    if not task.cancelled() and task.exception() is not None:
        log.warning("sandbox: replacing a container failed: %s", task.exception())


class SlotsMixin:
    """Starting, describing and replacing the container of a slot (mixed into the provider)."""

    _pool_id: str
    start_timeout: float
    direct_channel: bool
    sessions: SessionLeases
    max_frame: int

    async def _start_container(self, slot: Slot) -> SandboxContainer:
        c = slot.config
        spec = ContainerSpec(
            image=c.image,
            mem_limit=c.mem_limit,
            cpus=c.cpus,
            pids_limit=c.pids_limit,
            network=c.network,
            tmpfs_size=c.tmpfs_size,
            runtime=c.runtime,
            environment={"GLEITZEIT_PRELOAD": ",".join(c.preload)},
            labels={POOL_LABEL: self._pool_id},
        )
        return await SandboxContainer.start(
            slot.engine,
            spec,
            ready_timeout=self.start_timeout,
            max_frame=self.max_frame,
            direct=self.direct_channel,
        )

    def _describe(self, inst: ResourceInstance) -> None:
        slot: Slot = inst.handle
        cid = slot.container.id[:12] if slot.container else "-"
        inst.endpoint = f"{slot.engine.name}/{cid}"
        inst.metadata.update(
            container=cid,
            engine=slot.engine.name,
            image=slot.config.image,
            mem_limit=slot.config.mem_limit,
            network=slot.config.network,
            runtime=slot.config.runtime or "default",
        )

    def _recycle(self, inst: ResourceInstance, reason: str) -> asyncio.Task[None]:
        """Replace the slot's container (in the background unless awaited)."""
        slot: Slot = inst.handle
        if slot.replacing is not None and not slot.replacing.done():
            return slot.replacing
        self.sessions.drop_instance(inst.id)
        inst.metadata["last_recycle"] = reason

        async def replace() -> None:
            old, slot.container = slot.container, None
            if old is not None:
                await old.close()
            slot.container = await self._start_container(slot)
            slot.recycled += 1
            self._describe(inst)

        slot.replacing = asyncio.create_task(replace(), name=f"recycle-{inst.id}")
        slot.replacing.add_done_callback(_log_failure)
        return slot.replacing

    async def _ready(self, inst: ResourceInstance) -> SandboxContainer:
        slot: Slot = inst.handle
        if slot.replacing is not None and not slot.replacing.done():
            await asyncio.shield(slot.replacing)
        if slot.container is not None and not slot.container.dead:
            # A run its caller abandoned (Ctrl-C) is being stopped: wait for that first.
            settled = await slot.container.settle()
            if settled is None:
                await self._recycle(inst, "an abandoned run could not be stopped")
            elif isinstance(settled, dict):
                if settled.get("session_lost"):  # killed, not interrupted: namespace gone
                    self.sessions.drop_instance(inst.id)
                if settled.get("oom"):
                    await self._recycle(inst, "an abandoned run ran out of memory")
        if slot.container is None or slot.container.dead:
            reason = slot.container.dead if slot.container else None
            await self._recycle(inst, reason or "no container")
        if slot.container is None:
            raise ResourceFailed("no container could be started", instance=inst.id, started=False)
        return slot.container
