"""The fleet estimate (gleitzeit_jupyter/hub/fleet.py) and the ``fleet`` choice, on a fake
clock: no servers, only what their answers would say."""

from __future__ import annotations

import random
from collections import Counter

from gleitzeit_jupyter.hub.balancing import Balancer
from gleitzeit_jupyter.hub.fleet import Fleet
from gleitzeit_jupyter.hub.instance import ResourceInstance

M, N = "m:latest", "n:latest"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(tokens: int, tps: float, load_s: float = 0.0001, prompt_s: float = 0.01) -> dict:
    return {
        "eval_count": tokens,
        "eval_duration": int(tokens / tps * 1e9),
        "prompt_eval_duration": int(prompt_s * 1e9),
        "load_duration": int(load_s * 1e9),
    }


def test_the_faster_server_is_cheaper_until_its_queue_outweighs_its_speed() -> None:
    f = Fleet(clock=Clock())
    for ident, tps in (("fast", 400.0), ("slow", 100.0)):
        f.server(ident).slots, f.server(ident).slots_known = 1, True
        f.set_loaded(ident, [M])
        f.finished(ident, M, answer(20, tps))
    assert f.cost("fast", 0, M) < f.cost("slow", 0, M)
    # 20 tokens: 0.06 s there against 0.21 s; three queued calls make fast the slower choice
    assert f.cost("fast", 3, M) > f.cost("slow", 0, M)


def test_a_cold_load_counts_until_the_warm_queue_is_longer() -> None:
    clock = Clock()
    f = Fleet(clock=clock)
    for ident in ("warm", "cold"):
        f.server(ident).slots, f.server(ident).slots_known = 1, True
    f.set_loaded("warm", [M])
    f.set_loaded("cold", [])
    f.finished("warm", M, answer(10, 100))  # 0.11 s a call
    f.finished("cold", N, answer(10, 100, load_s=1.0))  # a load there takes 1 s
    f.set_loaded("cold", [N])
    assert f.cost("cold", 0, M) > f.cost("warm", 5, M)  # 0.55 s of queue < a 1 s load
    assert f.cost("cold", 0, M) < f.cost("warm", 12, M)
    f.starting("cold", M)  # sent there: one load, counted down, not paid again per call
    clock.now += 0.6
    assert f.cost("cold", 0, M) < 0.11 + 0.5


def test_evicting_a_model_a_server_needs_costs_its_reload_too() -> None:
    f = Fleet(clock=Clock())
    view = f.server("small")
    view.slots, view.slots_known, view.max_loaded = 2, True, 1
    f.set_loaded("small", [M])
    f.finished("small", N, answer(10, 100, load_s=1.0))  # loads of N and M both cost 1 s
    f.finished("small", M, answer(10, 100, load_s=1.0))
    assert list(view.loaded) == [M]  # room for one: N is out again
    base = f.cost("small", 0, M)
    assert f.cost("small", 0, N) > base + 2 * 1.0 - 0.01  # its own load and M's reload


def test_room_for_models_is_learned_from_an_eviction() -> None:
    f = Fleet(clock=Clock())
    f.set_loaded("s", [M])
    f.finished("s", N, answer(10, 100, load_s=2.0))
    f.set_loaded("s", [N])  # /api/ps after the cold load: M is gone
    assert f.server("s").max_loaded == 1


def test_slots_are_the_most_calls_seen_running_at_once() -> None:
    clock = Clock()
    f = Fleet(clock=clock)
    # three calls of 1 s end together: they ran side by side
    for _ in range(3):
        f.finished("s", M, answer(100, 100))
    assert f.server("s").slots == 3
    # then calls one after another: still 3, it never learns downwards from a quiet spell
    for _ in range(3):
        clock.now += 1.0
        f.finished("s", M, answer(100, 100))
    assert f.server("s").slots == 3


def test_a_configured_slot_count_is_kept() -> None:
    f = Fleet(clock=Clock())
    f.server("s").slots, f.server("s").slots_known = 2, True
    for _ in range(5):
        f.finished("s", M, answer(100, 100))
    assert f.server("s").slots == 2


def test_fleet_choice_takes_the_cheapest_and_spreads_near_ties() -> None:
    b = Balancer(random.Random(7))
    insts = [ResourceInstance(id=i, config=None) for i in "abc"]
    costs = {"a": 1.0, "b": 0.5, "c": 3.0}
    assert {b.choose("fleet", insts, cost=lambda i: costs[i.id]).id for _ in range(200)} == {"b"}
    tie = {"a": 1.0, "b": 1.01, "c": 9.0}
    picks = Counter(b.choose("fleet", insts, cost=lambda i: tie[i.id]).id for _ in range(400))
    assert picks["a"] > 100 and picks["b"] > 100 and picks["c"] == 0


def test_a_server_reporting_impossible_figures_does_not_poison_the_estimates() -> None:
    # JSON from a broken or lying server can hold negative counts, huge numbers (read as
    # inf), Infinity and NaN; none of it may make a cost negative, infinite or NaN anywhere.
    import math

    f = Fleet(clock=Clock())
    f.finished("good", M, answer(20, 100))
    f.set_loaded("good", [M])
    f.set_loaded("liar", [M])
    for bad in (
        {"eval_count": -1000, "eval_duration": 10**9},
        {"eval_count": True, "eval_duration": 1},
        {"eval_count": 10**400, "eval_duration": 1},
        {"eval_count": 10, "eval_duration": float("inf")},
        {"prompt_eval_duration": float("inf"), "load_duration": float("inf")},
        {"prompt_eval_duration": -(10**9), "load_duration": float("nan")},
    ):
        f.finished("liar", M, bad)
    for ident in ("good", "liar", "new"):
        for in_flight in (0, 5):
            c = f.cost(ident, in_flight, M)
            assert math.isfinite(c) and c > 0, (ident, in_flight, c)
    assert f.cost("good", 0, M) < 1.0  # 20 tokens at 100/s: still about 0.2 s


def test_room_for_models_grows_when_the_server_shows_more_in_memory() -> None:
    # A model can leave memory for other reasons than an eviction (its keep_alive ran out
    # just as another loaded): a room learned too small is corrected by the next /api/ps
    # that lists more models, instead of counting evictions that do not happen for good.
    f = Fleet(clock=Clock())
    f.set_loaded("s", [M])
    f.finished("s", N, answer(10, 100, load_s=2.0))
    f.set_loaded("s", [N])
    assert f.server("s").max_loaded == 1
    f.set_loaded("s", [M, N])
    assert f.server("s").max_loaded == 2
    f.finished("s", M, answer(10, 100))
    assert set(f.server("s").loaded) == {M, N}
    assert f.cost("s", 0, N) < 1.0  # in memory: no load, no eviction
