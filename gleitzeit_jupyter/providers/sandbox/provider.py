"""PythonProvider: a HubProvider over warm, hardened Docker containers that run Python.

Each pool instance is a *slot* holding one container (``instance.handle``); a container that
dies, runs out of memory, stops answering or reaches ``max_runs_per_container`` is replaced
inside its slot, so the slot keeps its id, metrics and breaker and counts ``recycled``.
A slot takes one call at a time (``max_concurrency=1``): extra calls queue in the hub, which
also scales the pool up to ``max_containers`` on demand.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from typing import Any

from ...hub import (
    HubError,
    HubProvider,
    NoResourceAvailable,
    ResourceFailed,
    ResourceInstance,
    UserError,
)
from .codec import has_pyarrow
from .container import ContainerDied
from .engine import Engine
from .image import DEFAULT_IMAGE
from .outputs import OutputLimits
from .protocol import MAX_FRAME
from .results import ResultLimits, check_names
from .runs import RunsMixin
from .sessions import SessionLeases
from .slots import DockerConfig, Slot, SlotsMixin
from .streaming import StreamingMixin

__all__ = ["DockerConfig", "PythonProvider", "PythonProviderStreamlined"]

log = logging.getLogger(__name__)
MiB = 1024 * 1024
METHODS = ("python/execute", "python/reset")


class PythonProvider(SlotsMixin, RunsMixin, StreamingMixin, HubProvider[DockerConfig]):
    """A pool of sandbox containers; see docs/sandbox.md for defaults, limits and security."""

    # Code that may have started is never run again elsewhere (it may have had effects):
    # the hub retries a run only when it provably never reached its container.
    retry_started_calls = False

    def __init__(
        self,
        max_containers: int = 5,
        min_warm: int | None = None,
        image: str | None = None,
        mem_limit: str = "512m",
        cpus: float = 1.0,
        pids_limit: int = 128,
        network: bool | str = False,
        timeout: float = 30.0,
        docker_hosts: list[str] | None = None,
        runtime: str | None = None,
        *,
        max_runs_per_container: int = 500,
        max_output: int = MiB,
        max_mime_bytes: int = 4 * MiB,
        max_outputs: int = 100,
        max_outputs_bytes: int = 32 * MiB,
        max_value_bytes: int | None = None,
        max_values_bytes: int | None = None,
        max_columns: int = 10_000,
        tmpfs_size: str = "64m",
        preload: tuple[str, ...] = (),
        start_timeout: float = 60.0,
        direct_channel: bool = True,
        **hub_options: Any,
    ) -> None:
        min_warm = min(1, max_containers) if min_warm is None else min_warm
        scaled = _value_cap(mem_limit)
        max_value_bytes = max_value_bytes or scaled or 32 * MiB
        max_values_bytes = max_values_bytes or scaled or 64 * MiB
        hub_options.setdefault("name", "sandbox")
        super().__init__(
            resource_config_class=DockerConfig,
            max_instances=max_containers,
            min_instances=min_warm,
            **hub_options,
        )
        self.timeout = timeout
        self.max_runs_per_container = max_runs_per_container
        self.max_output = max_output
        self.limits = ResultLimits(
            max_output=max_output,
            max_value_bytes=max_value_bytes,
            max_values_bytes=max_values_bytes,
            max_columns=max_columns,
            outputs=OutputLimits(
                max_mime_bytes=max_mime_bytes,
                max_outputs=max_outputs,
                max_total_bytes=max_outputs_bytes,
            ),
        )
        # The supervisor never sends more than one message of MAX_FRAME (with attachments).
        self.max_frame = min(self.limits.max_reply_with_files, MAX_FRAME + MiB)
        self.runtime = runtime or None
        self.start_timeout = start_timeout
        self.direct_channel = direct_channel
        self.engines = [Engine(h) for h in docker_hosts] if docker_hosts else [Engine(None)]
        self._template = DockerConfig(
            image=image or DEFAULT_IMAGE,
            mem_limit=mem_limit,
            cpus=cpus,
            pids_limit=pids_limit,
            network=network,
            tmpfs_size=tmpfs_size,
            preload=tuple(preload),
            runtime=runtime or None,
        )
        self._serial = itertools.count(1)
        self._pool_id = f"{id(self):x}"
        self._arrow = has_pyarrow()
        self.sessions = SessionLeases(self._reserve)
        self._per_engine: dict[str | None, int] = {}

    # ---- pool shape -------------------------------------------------------------------
    def _next_config(self) -> DockerConfig:
        # Spread over engines: the next slot goes to the engine with the fewest slots,
        # counting slots still being created (initialize asks for several at once).
        engine = min(self.engines, key=lambda e: self._per_engine.get(e.base_url, 0))
        self._per_engine[engine.base_url] = self._per_engine.get(engine.base_url, 0) + 1
        return DockerConfig(
            **{
                **self._template.__dict__,
                "docker_host": engine.base_url,
                "slot": next(self._serial),
            }
        )

    def _slot_gone(self, config: DockerConfig) -> None:
        self._per_engine[config.docker_host] = self._per_engine.get(config.docker_host, 1) - 1

    def _engine_for(self, config: DockerConfig) -> Engine:
        for engine in self.engines:
            if engine.base_url == config.docker_host:
                return engine
        return self.engines[0]

    async def initialize(self) -> None:
        if self.initialized:
            return
        source: Engine | None = None
        for engine in self.engines:
            try:
                removed = await engine.call(engine.remove_stale)
            except Exception as exc:
                raise ResourceFailed(
                    f"docker engine {engine.name} does not answer: {exc}",
                    hint="start dockerd or set DOCKER_HOST",
                ) from None
            if removed:
                log.info("sandbox: removed %d stale containers on %s", removed, engine.name)
            if self.runtime and self.runtime not in await engine.call(engine.runtimes):
                raise UserError(
                    f"docker engine {engine.name} has no runtime {self.runtime!r}",
                    hint="install it (gVisor: apt-get install runsc) and register it in the"
                    ' engine\'s daemon.json: {"runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}',
                )
            if source is None and await engine.call(self._has_image, engine):
                source = engine
        if source is None:
            raise UserError(
                f"sandbox image {self._template.image!r} not found",
                hint="build it with: gleitzeit-sandbox image build",
            )
        for engine in self.engines:  # no registry: copy the image to engines that lack it
            await engine.call(engine.ensure_image, self._template.image, source)
        await super().initialize()

    def _has_image(self, engine: Engine) -> bool:
        try:
            engine.client.images.get(self._template.image)
        except Exception:
            return False
        return True

    async def shutdown(self) -> None:
        """Remove every container and release the docker clients and their threads
        (``initialize()`` starts again from scratch)."""
        await super().shutdown()
        self.sessions.clear()
        for engine in self.engines:
            engine.close()

    async def close(self) -> None:
        """Same as :meth:`shutdown`."""
        await self.shutdown()

    async def initial_resources(self) -> list[DockerConfig]:
        return [self._next_config() for _ in range(self.min_instances)]

    async def config_for_new_resource(self) -> DockerConfig | None:
        return self._next_config()

    async def add_resource(self, config: DockerConfig | None = None) -> ResourceInstance:
        """Add one container; ``config`` defaults to the pool's settings. A config written by
        hand (``slot=0``) gets a slot number of its own, so several can be added."""
        if config is None:
            config = self._next_config()
        elif config.slot == 0:
            config = dataclasses.replace(config, slot=next(self._serial))
            self._per_engine[config.docker_host] = self._per_engine.get(config.docker_host, 0) + 1
        return await super().add_resource(config)

    def resource_key(self, config: DockerConfig) -> str:
        return f"{config.docker_host or 'default'}#{config.slot}"

    # ---- resources --------------------------------------------------------------------
    async def create_resource(self, config: DockerConfig) -> ResourceInstance:
        slot = Slot(self._engine_for(config), config)
        try:
            slot.container = await self._start_container(slot)
        except BaseException:
            self._slot_gone(config)
            raise
        inst: ResourceInstance = ResourceInstance(
            id=f"sandbox-{config.slot}", config=config, handle=slot, max_concurrency=1
        )
        self._describe(inst)
        return inst

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        slot: Slot = instance.handle
        self._slot_gone(slot.config)
        self.sessions.drop_instance(instance.id)
        if slot.replacing is not None:
            slot.replacing.cancel()
        if slot.container is not None:
            await slot.container.close()
            slot.container = None

    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        slot: Slot = instance.handle
        if slot.replacing is not None and not slot.replacing.done():
            return True  # being replaced right now; the next round will see the new one
        if slot.container is None or slot.container.dead:
            self._recycle(instance, "found dead by the health check")
            return False
        return await slot.container.ping(self.health_check_timeout)

    def instance_extras(self, instance: ResourceInstance) -> dict[str, Any]:
        slot: Slot = instance.handle
        return {
            "runs": slot.runs,
            "recycled": slot.recycled,
            "cpu_ms": round(slot.cpu_ms, 1),
            "peak_memory_mb": round(slot.peak_memory_mb, 1),
            "session": self.sessions.owner_of(instance.id),
        }

    def pool_extras(self, instances: list[ResourceInstance]) -> dict[str, Any]:
        return {
            "runs": sum(i.handle.runs for i in instances),
            "recycled": sum(i.handle.recycled for i in instances),
            "cpu_ms": round(sum(i.handle.cpu_ms for i in instances), 1),
            "peak_memory_mb": round(
                max((i.handle.peak_memory_mb for i in instances), default=0), 1
            ),
        }

    # ---- calls ------------------------------------------------------------------------
    def validate(self, method: str, params: dict[str, Any]) -> None:
        if method not in METHODS:
            raise UserError(
                f"the sandbox has no method {method!r}", hint=f"use one of {', '.join(METHODS)}"
            )
        if method == "python/execute" and not isinstance(params.get("code"), str):
            raise UserError("python/execute needs 'code' (a string)")
        if method == "python/reset" and not params.get("session"):
            raise UserError("python/reset needs 'session'")
        timeout = params.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise UserError(f"timeout must be a positive number of seconds, not {timeout!r}")
        try:
            check_names(params.get("returns") or params.get("values") or [])
            check_names(list(params.get("inputs") or {}))
        except ValueError as exc:
            raise UserError(f"python/execute: {exc}") from None

    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        # A leased container serves its session only, which reaches it by pinning (pinned
        # calls skip this check); every other call goes to an unleased container.
        return self.sessions.owner_of(instance.id) is None

    def no_instance_error(
        self, method: str, params: dict, instances: list[ResourceInstance]
    ) -> HubError | None:
        held = sorted({s for i in instances if (s := self.sessions.owner_of(i.id)) is not None})
        if instances and all(self.sessions.owner_of(i.id) for i in instances):
            return NoResourceAvailable(
                f"all {len(instances)} sandbox containers are held by sessions ({', '.join(held)})",
                hint="reset a session (python/reset) or raise max_containers",
            )
        return None

    def _reserve(self, instance_id: str, leased: bool) -> None:
        inst = next((i for i in self.instances if i.id == instance_id), None)
        if inst is None:
            return
        slot: Slot = inst.handle
        # The hub reaps idle containers it scaled up; a session's must live while its
        # namespace does (a notebook user may pause for longer than idle_timeout).
        if leased and inst.origin != "session":
            slot.origin, inst.origin = inst.origin, "session"
        elif not leased and inst.origin == "session":
            inst.origin = slot.origin
        if not leased:
            self._pump()  # the container takes other calls again: wake queued ones

    async def execute(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        strategy: str | None = None,
        instance: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        params = {} if params is None else params
        session = params.get("session")
        if session is None or instance is not None:
            return await super().execute(
                method, params, strategy=strategy, instance=instance, timeout=timeout
            )
        return await self.sessions.call(
            self._hub_execute, str(session), method, params, strategy, timeout
        )

    async def _hub_execute(
        self,
        method: str,
        params: dict[str, Any],
        strategy: str | None,
        instance: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        return await super().execute(
            method, params, strategy=strategy, instance=instance, timeout=timeout
        )

    async def execute_on_resource(
        self,
        instance: ResourceInstance,
        method: str,
        params: dict[str, Any],
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        try:
            container = await self._ready(instance)
        except ResourceFailed as exc:
            exc.started = False  # nothing was sent: another container may take the run
            raise
        except Exception as exc:
            raise ResourceFailed(
                f"no sandbox container could be started: {exc}", instance=instance.id, started=False
            ) from None
        if method == "python/reset":
            try:
                await container.reset()
            except (TimeoutError, ContainerDied) as exc:
                await self._recycle(instance, f"reset failed: {exc}")
            return {"reset": True, "session": params.get("session")}
        session = params.get("session")
        new = self.sessions.bind(str(session), instance.id) if session is not None else False
        result = await self._run(instance, container, params, on_chunk)
        if session is not None:
            result.update(session=str(session), session_new=new)
        return result


PythonProviderStreamlined = PythonProvider


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _value_cap(mem_limit: str) -> int | None:
    """The value caps a memory limit above the default 512m brings: an eighth of it (at most
    224 MiB, under the channel's frame limit), so ``--mem 2g`` can bring a 150 MB frame back.
    None at or below 512m (the documented 32/64 MiB apply) or for a limit not understood."""
    text = str(mem_limit).strip().lower().removesuffix("b")
    unit = text[-1:] if text[-1:] in ("k", "m", "g") else ""
    try:
        size = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except (ValueError, OverflowError):  # "", "lots", "infg"
        return None
    if size <= 512 * MiB:
        return None
    return min(224 * MiB, size // 8)
