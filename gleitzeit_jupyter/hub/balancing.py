"""Load-balancing strategies: pick one instance among the candidates of a call.

Every strategy sees only candidates (healthy, breaker admits, accepts the request, has a free
slot); the provider decides who is a candidate, this module only chooses.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence

from .errors import UserError
from .instance import ResourceInstance

__all__ = ["STRATEGIES", "Balancer", "HashRing"]

STRATEGIES = (
    "fleet",
    "round_robin",
    "random",
    "least_loaded",
    "least_latency",
    "weighted",
    "affinity",
)

#: ``fleet`` compares expected finish times scaled by up to this much random noise: near-ties
#: (within a few percent) spread over the instances instead of herding onto one, while an
#: instance clearly faster still wins every time.
FLEET_JITTER = 0.08

#: Load bound factor of consistent hashing with bounded loads (Mirrokni et al.): no instance
#: takes more than ``c`` times the average load, so one hot key cannot pin a busy instance.
AFFINITY_LOAD_FACTOR = 1.25

_M64 = (1 << 64) - 1


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    # splitmix64 finaliser: a cheap, well-avalanching 64-bit bijection
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class HashRing:
    """Consistent hashing of keys onto instance ids, by rendezvous (highest-random-weight)
    hashing: a key prefers the ids in decreasing order of ``score(id, key)``.

    Why not a ring of virtual nodes: with 160 per id its arcs vary enough that adding an 11th
    instance moved more than 10 % of the keys for about one pool in five. Rendezvous hashing
    has no such variance: adding one instance to n moves exactly the keys whose top score is
    the new id, 1/(n+1) of them in expectation, and removing one moves only its own keys.
    Cost: one hash of the key plus n integer mixes per call, and no ring to rebuild.
    """

    def __init__(self, ids: Sequence[str]):
        self._ids = [(_hash(i), i) for i in ids]

    def walk(self, key: str):
        """Instance ids in the key's order of preference, each once."""
        kh = _hash(key)
        scored = [(_mix(kh ^ h), ident) for h, ident in self._ids]
        if not scored:
            return
        top = max(scored)
        yield top[1]  # usually all a caller needs: rank the rest only when asked
        scored.remove(top)
        scored.sort(reverse=True)
        for _, ident in scored:
            yield ident


class Balancer:
    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self._rr = 0
        self._ring: HashRing | None = None
        self._ring_ids: tuple[str, ...] = ()

    @staticmethod
    def check(strategy: str) -> str:
        if strategy not in STRATEGIES:
            raise UserError(
                f"unknown balancing strategy {strategy!r}",
                hint=f"choose one of {', '.join(STRATEGIES)}",
            )
        return strategy

    def choose(
        self,
        strategy: str,
        candidates: Sequence[ResourceInstance],
        key: str | None = None,
        members: Sequence[ResourceInstance] = (),
        cost: Callable[[ResourceInstance], float] | None = None,
    ) -> ResourceInstance:
        """Pick one of ``candidates`` (non-empty). ``members`` is the whole pool, used by
        ``affinity`` so that a key's place on the ring does not depend on who is busy.
        ``cost``: the call's expected finish time per instance, used by ``fleet``."""
        if len(candidates) == 1:
            return candidates[0]
        if strategy == "fleet":
            if cost is None:
                return self._p2c(candidates, lambda i: i.in_flight)
            return self._soonest(candidates, cost)
        if strategy == "least_loaded":
            return self._p2c(candidates, lambda i: i.in_flight)
        if strategy == "round_robin":
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        if strategy == "random":
            return self.rng.choice(candidates)
        if strategy == "least_latency":
            return self._p2c(candidates, _latency_cost)
        if strategy == "weighted":
            weights = [max(i.weight, 0.0) for i in candidates]
            if sum(weights) <= 0:
                return self.rng.choice(candidates)
            return self.rng.choices(candidates, weights=weights)[0]
        if strategy == "affinity":
            if key is None:
                return self._p2c(candidates, lambda i: i.in_flight)
            return self._affinity(candidates, key, members or candidates)
        self.check(strategy)
        raise AssertionError(strategy)  # pragma: no cover - check raised already

    def _soonest(self, candidates, cost):
        # Every candidate, not two sampled ones: in a fleet of unequal servers the fast one
        # must be able to win every call it would finish first (sampling two of three would
        # cap its share at two thirds). The jitter keeps the randomisation of P2C for ties.
        rnd = self.rng.random
        best, best_cost = candidates[0], math.inf
        for inst in candidates:
            c = cost(inst) * (1.0 + FLEET_JITTER * rnd())
            if c < best_cost:
                best, best_cost = inst, c
        return best

    def _p2c(self, candidates, cost):
        # Power of two random choices: sample two distinct instances, keep the cheaper; on a
        # tie the first sampled wins, which is itself a random one of the two.
        a, b = self.sample_two(candidates)
        return b if cost(b) < cost(a) else a

    def sample_two(self, candidates):
        """Two distinct candidates, uniformly: rng.sample(candidates, 2), but cheaper."""
        n = len(candidates)
        i = self.rng.randrange(n)
        j = self.rng.randrange(n - 1)
        return candidates[i], candidates[j + 1 if j >= i else j]

    def ring(self, members: Sequence[ResourceInstance]) -> HashRing:
        ids = tuple(sorted(m.id for m in members))
        if ids != self._ring_ids or self._ring is None:
            self._ring = HashRing(ids)
            self._ring_ids = ids
        return self._ring

    def _affinity(self, candidates, key, members):
        by_id = {c.id: c for c in candidates}
        total = sum(c.in_flight for c in candidates) + 1
        bound = math.ceil(AFFINITY_LOAD_FACTOR * total / len(candidates))
        first = None
        for ident in self.ring(members).walk(key):
            inst = by_id.get(ident)
            if inst is None:
                continue
            if first is None:
                first = inst
            if inst.in_flight + 1 <= bound:
                return inst
        return first if first is not None else candidates[0]


def _latency_cost(inst: ResourceInstance) -> float:
    # Peak-EWMA cost scaled by outstanding work; an instance without samples costs 0 so it is
    # tried (and measured) early.
    ewma = inst.metrics.ewma_ms if inst.metrics is not None else None
    return (ewma or 0.0) * (inst.in_flight + 1)
