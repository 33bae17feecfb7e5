"""What a pool knows about unequal servers of models: speed, slots, models in memory.

The ``fleet`` strategy asks :meth:`Fleet.cost` for each candidate and sends the call where it
is expected to finish first. The estimate for one call of ``model`` on one server:

    cost = backoff + foreign + cold + wait + service
    service = time to first token + tokens / tokens_per_s     (learned per server and model)
    wait    = calls queued beyond the server's slots x service / slots
    cold    = 0 if the model is in memory there; the rest of its load if it is loading; else
              its load time (learned per server and model), plus, when the server is full,
              the load of the model it would evict (its next call pays that again)
    foreign = the wait for a slot other clients' calls caused there lately (total_duration
              less the rest, less this pool's own queue; it halves every 2 s unasked)
    backoff = what is left of a "busy" (503) answer's back-off

A server or model without samples borrows the pool's figures for the model (then any model),
so it is tried and measured early; nothing is a guess once calls have come back. Memory is
bounded: a few floats per (server, model).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["COLD_LOAD_S", "Fleet", "ServerView", "figure"]

#: A load_duration above this is a cold load (a warm model reports microseconds).
COLD_LOAD_S = 0.05
_ALPHA = 0.2  # EWMA weight of a new sample
_PRIOR_LOAD_S = 3.0  # a model's load time before any was seen anywhere
_PRIOR_SERVICE_S = 1.0
_PRIOR_TOKENS = 128.0
_SPANS = 32  # recent calls' running spans per server, for learning its slots
#: Half-life of the queue other clients make on a server: it is learned only from calls
#: sent there, so an estimate that kept its value would keep calls away for good.
_FOREIGN_HALF_LIFE_S = 2.0


def _server_time(stamp: Any) -> float | None:
    """Seconds of an RFC 3339 ``created_at`` (Go writes up to 9 fractional digits)."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def figure(value: Any) -> float | None:
    """A count or duration from an answer, if it is one: a finite number >= 0. JSON from a
    broken server can hold anything (negatives, NaN, Infinity, integers too big for a float),
    and one such value would otherwise spread through the pooled estimates."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + _ALPHA * (new - old)


@dataclass
class _Rates:
    tps: float | None = None  # tokens per second while generating, per call
    ttft_s: float | None = None  # prompt evaluation: time to first token
    load_s: float | None = None  # a cold load


@dataclass
class ServerView:
    """One server as the pool sees it."""

    slots: int = 1
    slots_known: bool = False  # configured; else learned (only ever upwards)
    max_loaded: int | None = None  # models it holds at once; None: not known (no limit seen)
    loaded: OrderedDict[str, None] = field(default_factory=OrderedDict)  # oldest use first
    loading_until: dict[str, float] = field(default_factory=dict)
    busy_until: float = 0.0
    rates: dict[str, _Rates] = field(default_factory=dict)
    cold_loads: int = 0
    spans: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=_SPANS))
    cold_since_refresh: bool = False
    foreign_s: float = 0.0  # the wait for a slot that other clients' calls cause there
    foreign_at: float = 0.0


class Fleet:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._servers: dict[str, ServerView] = {}
        self._tokens: dict[str, float] = {}  # model -> tokens per answer (EWMA, pool-wide)

    def server(self, ident: str) -> ServerView:
        view = self._servers.get(ident)
        if view is None:
            view = self._servers[ident] = ServerView()
        return view

    def forget(self, ident: str) -> None:
        self._servers.pop(ident, None)

    # ---- what the servers tell ----------------------------------------------------------
    def set_loaded(self, ident: str, models: Iterable[str]) -> None:
        """The models a server lists as in memory (``/api/ps``, most recently used first).
        A model gone after a cold load since the last look was evicted: the server holds no
        more than it lists now."""
        view = self.server(ident)
        now = list(models)
        if view.cold_since_refresh and any(m not in now for m in view.loaded) and now:
            view.max_loaded = len(now) if view.max_loaded is None else view.max_loaded
        if view.max_loaded is not None and len(now) > view.max_loaded:
            # It holds more than that right now: the room was learned from a model that left
            # for another reason (its keep_alive ran out), or configured too small.
            view.max_loaded = len(now)
        view.cold_since_refresh = False
        view.loaded = OrderedDict((m, None) for m in reversed(now))
        for m in now:
            view.loading_until.pop(m, None)

    def starting(self, ident: str, model: str, in_flight: int = 1) -> float:
        """A call for ``model`` was just sent to the server (``in_flight``: this pool's calls
        there, this one included): count its load once. Returns the wait for a slot this
        pool's own calls make it expect, for :meth:`finished`."""
        view = self.server(ident)
        slots = max(view.slots, 1)
        own_wait = max(0, in_flight - slots) * self.service_s(ident, model) / slots
        if model in view.loaded:
            view.loaded.move_to_end(model)
            return own_wait
        if model in view.loading_until:
            return own_wait
        view.loading_until[model] = self.clock() + self._load_s(view, model)
        if view.max_loaded is not None:
            while view.loaded and len(view.loaded) + len(view.loading_until) > view.max_loaded:
                view.loaded.popitem(last=False)  # the server evicts its least recently used
        return own_wait

    def abandoned(self, ident: str, model: str) -> None:
        """A call sent by :meth:`starting` ended without an answer (refused, failed,
        cancelled): it loaded nothing, so its expected load must not count down to "in memory".
        A load another call started goes unmarked too: overestimating it is the safe side,
        and the next ``/api/ps`` corrects it."""
        self.server(ident).loading_until.pop(model, None)

    def finished(
        self, ident: str, model: str, data: dict[str, Any], own_wait: float | None = None
    ) -> None:
        """Learn from a final Ollama answer (durations in ns); ``own_wait``: what
        :meth:`starting` returned for the call."""
        view = self.server(ident)
        if own_wait == 0.0:
            # Sent with a slot free of this pool's own calls: a wait for a slot was made by
            # others. (Behind its own queue a sample cannot tell whose calls it waited for.)
            self._learn_foreign(view, data, self.service_s(ident, model))
        if data.get("done_reason") == "unload":  # keep_alive 0 without a prompt
            view.loading_until.pop(model, None)
            view.loaded.pop(model, None)
            return
        if not view.slots_known:
            self._learn_slots(view, data)
        rates = view.rates.setdefault(model, _Rates())
        count, eval_ns = figure(data.get("eval_count")), figure(data.get("eval_duration"))
        if count is not None and eval_ns:
            tps = count / (eval_ns / 1e9)
            if math.isfinite(tps):
                rates.tps = _ewma(rates.tps, tps)
                self._tokens[model] = _ewma(self._tokens.get(model), count)
        prompt_ns = figure(data.get("prompt_eval_duration"))
        if prompt_ns is not None:
            rates.ttft_s = _ewma(rates.ttft_s, prompt_ns / 1e9)
        load_ns = figure(data.get("load_duration"))
        if load_ns is not None and load_ns / 1e9 > COLD_LOAD_S:
            rates.load_s = _ewma(rates.load_s, load_ns / 1e9)
            view.cold_loads += 1
            view.cold_since_refresh = True
        view.loading_until.pop(model, None)
        view.loaded[model] = None
        view.loaded.move_to_end(model)
        if view.max_loaded is not None:
            while len(view.loaded) > view.max_loaded:
                view.loaded.popitem(last=False)

    def _learn_foreign(self, view: ServerView, data: dict[str, Any], expected: float) -> None:
        # Other kernels' calls on a shared server are not in this pool's in-flight counts:
        # each pool alone would see every server idle and send every call to the fastest.
        # Ollama's total_duration counts the wait for a slot, the rest of it does not; what
        # that wait, beyond ``expected`` (one call's service: slack for timing noise), was
        # made by others.
        parts = [
            figure(data.get(k))
            for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
        ]
        if None in parts:
            return
        total, load, prompt, gen = parts
        waited = max(0.0, (total - load - prompt - gen) / 1e9)  # type: ignore[operator]
        now = self.clock()
        view.foreign_s = _ewma(self._foreign(view, now), max(0.0, waited - expected))
        view.foreign_at = now

    @staticmethod
    def _foreign(view: ServerView, now: float) -> float:
        if not view.foreign_s:
            return 0.0
        return view.foreign_s * 0.5 ** (max(0.0, now - view.foreign_at) / _FOREIGN_HALF_LIFE_S)

    def _learn_slots(self, view: ServerView, data: dict[str, Any]) -> None:
        # When did this call run on the server (not wait there)? Its answer says when it was
        # made (created_at, the server's clock: a client busy elsewhere reads answers late
        # and in bunches, which would make calls that ran one after another look parallel)
        # and how long loading, the prompt and generation took. The most such spans seen
        # overlapping at one instant is a lower bound of the server's slots.
        parts = [
            figure(data.get(k)) for k in ("load_duration", "prompt_eval_duration", "eval_duration")
        ]
        if None in parts:
            return
        work = sum(parts) / 1e9  # type: ignore[arg-type]
        end = _server_time(data.get("created_at"))
        if end is None:
            end = self.clock()
        # Timestamps and durations are not exact: spans shortened by this much on
        # each side do not count a slot freed and reused at once as two calls running.
        blur = max(0.002, 0.05 * work)
        span = (end - work + blur, end - blur)
        if span[1] <= span[0]:
            return
        recent = view.spans
        recent.append(span)
        for point in [s for s, _ in recent if span[0] <= s < span[1]]:
            running = sum(1 for s, e in recent if s <= point < e)
            view.slots = max(view.slots, running)

    def busy(self, ident: str, seconds: float) -> None:
        self.server(ident).busy_until = self.clock() + seconds

    # ---- estimates ---------------------------------------------------------------------
    def _pooled(self, model: str, attr: str) -> float | None:
        same = [getattr(v.rates[model], attr) for v in self._servers.values() if model in v.rates]
        same = [x for x in same if x is not None]
        if same:
            return sum(same) / len(same)
        anyv = [getattr(r, attr) for v in self._servers.values() for r in v.rates.values()]
        anyv = [x for x in anyv if x is not None]
        return sum(anyv) / len(anyv) if anyv else None

    def _rate(self, view: ServerView, model: str, attr: str) -> float | None:
        own = view.rates.get(model)
        value = getattr(own, attr) if own is not None else None
        if value is None:
            mine = [getattr(r, attr) for r in view.rates.values() if getattr(r, attr) is not None]
            value = sum(mine) / len(mine) if mine else self._pooled(model, attr)
        return value

    def _load_s(self, view: ServerView, model: str) -> float:
        own = view.rates.get(model)
        if own is not None and own.load_s is not None:
            return own.load_s
        return self._pooled(model, "load_s") or _PRIOR_LOAD_S

    def service_s(self, ident: str, model: str, tokens: float | None = None) -> float:
        """Expected seconds one call of ``model`` runs on the server once it has a slot."""
        view = self.server(ident)
        n = tokens if tokens is not None else self._tokens.get(model, _PRIOR_TOKENS)
        tps = self._rate(view, model, "tps")
        ttft = self._rate(view, model, "ttft_s") or 0.0
        if tps is None or tps <= 0:
            return _PRIOR_SERVICE_S + ttft
        return ttft + n / tps

    def cost(self, ident: str, in_flight: int, model: str, tokens: float | None = None) -> float:
        """Expected seconds until a call of ``model`` sent now would finish there."""
        view = self.server(ident)
        now = self.clock()
        service = self.service_s(ident, model, tokens)
        slots = max(view.slots, 1)
        wait = max(0, in_flight + 1 - slots) * service / slots
        cold = 0.0
        if model not in view.loaded:
            until = view.loading_until.get(model)
            if until is not None:
                cold = max(0.0, until - now)
            else:
                cold = self._load_s(view, model)
                full = view.max_loaded is not None and (
                    len(view.loaded) + len(view.loading_until) >= view.max_loaded
                )
                if full and view.loaded:
                    # Ollama evicts only an idle model: the calls running there finish first,
                    # and the evicted model's next call loads it again.
                    victim = next(iter(view.loaded))
                    cold += in_flight * service / slots + self._load_s(view, victim)
        foreign = self._foreign(view, now)
        return max(0.0, view.busy_until - now) + foreign + cold + wait + service

    def snapshot(self, ident: str) -> dict[str, Any]:
        """JSON-able figures for status(): what the estimate is made of."""
        view = self.server(ident)
        return {
            "slots": view.slots,
            "slots_learned": not view.slots_known,
            "max_loaded": view.max_loaded,
            "loaded": list(view.loaded),
            "cold_loads": view.cold_loads,
            "rates": {
                m: {
                    "tokens_per_s": None if r.tps is None else round(r.tps, 1),
                    "ttft_ms": None if r.ttft_s is None else round(r.ttft_s * 1000, 1),
                    "load_ms": None if r.load_s is None else round(r.load_s * 1000, 1),
                }
                for m, r in view.rates.items()
            },
        }
