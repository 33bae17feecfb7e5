"""A seeded, deterministic fault simulator over the in-memory pool, in virtual time.

One *schedule* is a random sequence of steps (kills, hangs, slowdowns, 503s, resets, refused
connections, recoveries, drains, adds and removes, bursts of calls and streams from several
tenants, pauses) drawn from ``random.Random(seed)``. It runs on :class:`VirtualTimeLoop`, an
asyncio loop whose clock jumps to the next timer instead of sleeping, so a schedule spanning
minutes of pool time takes milliseconds and replays exactly from its seed
(:mod:`gleitzeit_jupyter.testing.virtual_time`); the pool is the in-memory one, recording
what each call saw (:mod:`gleitzeit_jupyter.testing.sim_provider`).

After every step the pool's invariants are checked (:class:`Simulation.check`); at the end
every call must have ended by its deadline, and a recovered pool must serve again. A broken
invariant raises :class:`InvariantViolation` naming the seed::

    run_schedule(1234)          # raises InvariantViolation("seed 1234, step 7: ...")
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from ..hub import (
    CircuitState,
    ExecutionTimeout,
    HubError,
    ResourceInstance,
    ResourceStatus,
)
from .memory import MemoryConfig, MemoryResource
from .sim_provider import SimProvider
from .virtual_time import InvariantViolation, VirtualTimeLoop

__all__ = ["InvariantViolation", "Simulation", "VirtualTimeLoop", "run_schedule"]

_ROUTABLE = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_SLACK = 1e-3  # virtual seconds a call may end after its deadline (cancellation unwinding)


@dataclass
class _Call:
    ident: int
    started: float
    timeout: float
    stream: bool
    good_at_start: dict[str, int]  # instance id -> fault epoch, of instances fully good
    chunks: int = 3
    ended: float | None = None
    error: BaseException | None = None


@dataclass
class Simulation:
    seed: int
    steps: int = 12
    rng: random.Random = field(init=False)
    step: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.calls: list[_Call] = []
        self.tasks: list[asyncio.Task] = []
        self.epoch: dict[str, int] = {}  # instance id -> faults injected so far
        self.violations: list[str] = []
        self.names = 0

    # ---- the pool ---------------------------------------------------------------------
    def _config(self) -> MemoryConfig:
        self.names += 1
        capacity = self.rng.choice([None, 1, 2, 4])
        return MemoryConfig(
            f"i{self.names}", latency=self.rng.choice([0.0, 0.01, 0.1]), capacity=capacity
        )

    def _resource(self, inst: ResourceInstance) -> MemoryResource:
        return inst.handle  # type: ignore[no-any-return]

    def _good(self, inst: ResourceInstance) -> bool:
        r = self._resource(inst)
        return (
            r.alive
            and r.healthy
            and not (r.fail or r.hang or r.refuse or r.error is not None or r.destroyed)
            and inst.enabled
            and inst.status in _ROUTABLE
            and inst.breaker_state is CircuitState.CLOSED
            and inst.id in {i.id for i in self.p.instances}
        )

    def _fault(self, inst: ResourceInstance) -> None:
        self.epoch[inst.id] = self.epoch.get(inst.id, 0) + 1

    # ---- calls ------------------------------------------------------------------------
    async def _run_call(self, call: _Call, tenant: str, priority: int) -> None:
        params: dict[str, Any] = {"tenant": tenant, "priority": priority, "call": call.ident}
        try:
            if call.stream:
                params["chunks"] = call.chunks
                params["final"] = True
                async for _ in self.p.stream("m", params, timeout=call.timeout):
                    pass
            else:
                await self.p.execute("m", params, timeout=call.timeout)
        except HubError as exc:
            call.error = exc
            self._judge_failure(call, exc)
        finally:
            call.ended = self.loop.time()

    def _judge_failure(self, call: _Call, exc: HubError) -> None:
        """A failed call was lost if an instance stayed fully good (no fault injected, routable,
        breaker closed) from its start to its failure and could have taken it."""
        if call.stream and call.ident in self.p.streamed:
            return  # failed after output: not retried, by design
        steady = [
            i
            for i in self.p.instances
            if self._good(i) and call.good_at_start.get(i.id) == self.epoch.get(i.id, 0)
        ]
        if isinstance(exc, ExecutionTimeout):
            if exc.instance is None:  # timed out waiting in the queue
                # free before this instant (a slot freed at the deadline itself is a tie)
                now = self.loop.time()
                free = [i for i in steady if i.has_capacity and self.p.freed_at.get(i.id, -1) < now]
                if free:
                    self._note(f"call {call.ident} timed out queued while {free[0].id} was free")
            return
        if steady:
            self._note(f"call {call.ident} lost ({exc}) though {steady[0].id} could serve it")

    def _burst(self) -> None:
        for _ in range(self.rng.randint(1, 6)):
            ident = len(self.calls)
            good = {i.id: self.epoch.get(i.id, 0) for i in self.p.instances if self._good(i)}
            call = _Call(
                ident,
                self.loop.time(),
                self.rng.choice([0.2, 0.5, 1.0, 3.0]),
                self.rng.random() < 0.3,
                good,
                self.rng.randint(1, 3),
            )
            self.calls.append(call)
            tenant = self.rng.choice(["t1", "t2", "t3"])
            self.tasks.append(
                asyncio.ensure_future(self._run_call(call, tenant, self.rng.randint(0, 2)))
            )

    # ---- faults -----------------------------------------------------------------------
    async def _act(self) -> None:
        p, rng = self.p, self.rng
        instances = p.instances
        inst = rng.choice(instances) if instances else None
        action = rng.choice(
            [
                "burst",
                "burst",
                "burst",
                "pause",
                "kill",
                "hang",
                "slow",
                "fail",
                "reset",
                "refuse",
                "recover",
                "recover",
                "drain",
                "enable",
                "add",
                "remove",
            ]
        )
        if action == "burst":
            self._burst()
        elif action == "pause":
            await asyncio.sleep(rng.choice([0.05, 0.3, 1.0, 2.5]))
        elif action == "add":
            if len(instances) + p.creating < p.max_instances:
                try:
                    await p.add_resource(self._config())
                except HubError:
                    pass
        elif inst is None:
            self._burst()
        elif action == "remove":
            if len(instances) > 1:
                self._fault(inst)
                self.tasks.append(asyncio.ensure_future(p.remove_resource(inst.id, 2.0)))
        elif action == "drain":
            self._fault(inst)
            p.drain(inst.id)
        elif action == "enable":
            p.enable(inst.id)
        else:
            r = self._resource(inst)
            self._fault(inst)
            if action == "kill":
                r.alive = False
            elif action == "hang":
                r.hang = True
            elif action == "slow":
                inst.config.latency = 0.4
            elif action == "fail":
                r.fail = True  # a 503 on every call
            elif action == "reset":
                r.error = ConnectionResetError("connection reset by peer")
            elif action == "refuse":
                r.refuse = True
            elif action == "recover":
                self._recover(inst)
        await asyncio.sleep(0.001)

    def _recover(self, inst: ResourceInstance) -> None:
        r = self._resource(inst)
        r.alive, r.hang, r.fail, r.refuse, r.error = True, False, False, False, None
        inst.config.latency = 0.01

    # ---- invariants -------------------------------------------------------------------
    def _violate(self, what: str) -> None:
        raise InvariantViolation(f"seed {self.seed}, step {self.step}: {what}")

    def _note(self, what: str) -> None:
        """A violation seen inside a call's task: raised by the next :meth:`check`."""
        self.violations.append(what)

    def check(self) -> None:
        p = self.p
        if self.violations:
            self._violate(self.violations[0])
        if len(p.instances) + p.creating > p.max_instances:
            self._violate(f"{len(p.instances)} instances, max {p.max_instances}")
        for inst in p.instances:
            cap = inst.max_concurrency
            r = self._resource(inst)
            if cap is not None and (inst.in_flight > cap or r.active > cap):
                self._violate(f"{inst.id}: {inst.in_flight} in flight, capacity {cap}")
            if inst.in_flight < 0:
                self._violate(f"{inst.id}: in flight went negative")
            b = inst.breaker
            if b is not None and b.trials > b.half_open_max:
                self._violate(f"{inst.id}: {b.trials} half-open trials, max {b.half_open_max}")
        for r in p.resources.values():
            if r.after_destroy:
                self._violate(f"{r.config.name}: a call ran after it was destroyed")
        if p.gate_violations:
            self._violate(p.gate_violations[0])
        if p.retried_after_output:
            self._violate(f"call {p.retried_after_output[0]} retried after output")
        for call in self.calls:
            if call.ended is not None and call.ended > call.started + call.timeout + _SLACK:
                self._violate(f"call {call.ident} ended after its deadline")
            if call.ended is None and self.loop.time() > call.started + call.timeout + _SLACK:
                self._violate(f"call {call.ident} still running past its deadline")

    # ---- the run ----------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        rng = self.rng
        self.p = SimProvider(
            [self._config() for _ in range(rng.randint(1, 3))],
            scale_template=MemoryConfig("s", capacity=2) if rng.random() < 0.3 else None,
            max_instances=4,
            enable_sharing=True,
            health_check_interval=0.5,
            health_check_timeout=0.2,
            unhealthy_threshold=2,
            healthy_threshold=1,
            breaker_failure_threshold=3,
            breaker_recovery_timeout=0.5,
            breaker_half_open_max=rng.choice([1, 2]),
            retries=8,  # a lost call must mean the pool failed it, not that attempts ran out
            min_retries_per_s=100.0,
            max_queue=1000,
            idle_timeout=2.0,
            shutdown_grace=0.5,
        )
        await self.p.initialize()
        try:
            for step in range(self.steps):
                self.step = step
                await self._act()
                self.check()
            # Recover everything; every call ends by its deadline; the pool serves again.
            for inst in self.p.instances:
                self._recover(inst)
                self.p.enable(inst.id)
                self._fault(inst)
            await asyncio.sleep(3.5)  # past the longest deadline
            self.check()
            pending = [c.ident for c in self.calls if c.ended is None]
            if pending:
                self._violate(f"calls {pending[:5]} never ended")
            for inst in self.p.instances:
                self.p.reset_breaker(inst.id)
            await self.p.check_health_now()
            await self.p.check_health_now()
            if self.p.instances:
                results = await asyncio.gather(
                    *(self.p.execute("m", {"call": -1}, timeout=5.0) for _ in range(4)),
                    return_exceptions=True,
                )
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    self._violate(f"a recovered pool failed a call: {failed[0]!r}")
            self.step = self.steps
            self.check()
        finally:
            await self.p.shutdown(grace=0.1)
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for r in self.p.resources.values():
            if r.after_destroy:
                self._violate(f"{r.config.name}: a call ran after it was destroyed")


def run_schedule(seed: int, steps: int = 12) -> Simulation:
    """Run one schedule on a fresh virtual-time loop; raises InvariantViolation."""
    sim = Simulation(seed, steps)
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(sim.run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return sim
