"""One ``%%llm`` over every LLM pool of the kernel: the Ollama pool and the OpenAI-compatible
pool (vLLM, llama.cpp, LM Studio, SGLang, TGI).

``-m MODEL`` goes to whichever pool serves MODEL; ``-m POOL:MODEL`` (``ollama:llama3.2``,
``openai:Qwen/Qwen2.5-7B-Instruct``) picks the pool. Only a known pool name counts as a
prefix, so ``llama3.2:1b`` stays a model name.

Why a router over the pools rather than one hub over servers of both kinds: each pool keeps
its hub's guarantees as they are (queueing, at-most-once failover, breakers, health, its
own wire format), and the router adds only the choice between pools. That choice is the
fleet-aware one: for a model in several pools each call goes to the pool whose best server
is expected to finish it first (each pool's ``instance_cost``, in seconds, so comparable).
A call a pool cannot serve at all (no server up, every one failed before answering) moves on
to the next pool that has the model, so no call is lost when a whole pool goes away; a
stream that already produced output is never restarted elsewhere, and a call that may have
run is not either when its pool never retries such calls (``retries=0``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from ..hub import (
    ExecutionTimeout,
    HubError,
    NoResourceAvailable,
    ResourceFailed,
    ResourceStatus,
    UserError,
)
from ..providers.openai import another_pool

__all__ = ["POOLS", "LlmRouter", "split_pool"]

#: The pools a ``POOL:`` prefix may name, in the order tried when no pool has a model.
POOLS = ("ollama", "openai")
_LIVE = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_MERGED = "llm/models"


def split_pool(model: str | None) -> tuple[str | None, str | None]:
    """(pool, model) of ``POOL:MODEL``; (None, model) when the part before the first colon
    is not a pool name (``llama3.2:1b``). A pool name with no model is a UserError."""
    if not model:
        return None, model
    head, sep, rest = model.partition(":")
    if sep and head in POOLS:
        if not rest.strip():
            raise UserError(f"-m {head}: names no model", hint=f"write -m {head}:MODEL")
        return head, rest
    return None, model


def _best_cost(provider: Any, method: str, params: dict[str, Any]) -> float | None:
    """Seconds the pool's best server is expected to need for the call; None: no live
    server of the pool takes it."""
    costs = [
        provider.instance_cost(i, method, params)
        for i in provider.instances
        if i.enabled and i.status in _LIVE and provider.instance_accepts(i, method, params)
    ]
    return min(costs) if costs else None


def _lists(provider: Any, model: str) -> bool:
    """Some server of the pool lists the model (whatever its health)."""
    names = {str(m) for i in provider.instances for m in i.metadata.get("models") or ()}
    return model in names or f"{model}:latest" in names or model.removesuffix(":latest") in names


class LlmRouter:
    """``execute`` / ``stream`` like a provider's, over ``pools`` (name -> provider)."""

    def __init__(self, pools: dict[str, Any]) -> None:
        self.pools = dict(pools)

    def candidates(
        self, method: str, params: dict[str, Any], instance: str | None = None
    ) -> list[tuple[str, Any, dict[str, Any]]]:
        """The pools to try, best first, each with the call's params (prefix removed).
        Runs on the runtime loop (it reads the pools' routing state)."""
        pool, model = split_pool(params.get("model"))
        call = dict(params, model=model) if pool else params
        if pool is not None:
            if pool not in self.pools:
                raise UserError(
                    f"no {pool} pool is configured",
                    hint="set %config Gleitzeit.openai_hosts = ['http://HOST:8000/v1']"
                    " or %gleitzeit add openai URL"
                    if pool == "openai"
                    else None,
                )
            return [(pool, self.pools[pool], call)]
        if instance is not None:
            for name, p in self.pools.items():
                if any(i.id == instance for i in p.instances):
                    return [(name, p, call)]
        if len(self.pools) == 1:
            name, p = next(iter(self.pools.items()))
            return [(name, p, call)]
        ranked: list[tuple[float, int, str]] = []
        listing: list[str] = []
        for order, (name, p) in enumerate(self.pools.items()):
            try:
                p.validate(method, call)
            except HubError:
                continue  # a call this kind of server cannot take (think on an OpenAI pool)
            cost = _best_cost(p, method, call)
            if cost is not None:
                ranked.append((cost, order, name))
            elif model and _lists(p, str(model)):
                listing.append(name)
        names = [n for _, _, n in sorted(ranked)] + listing
        if not names:
            # Nobody lists the model: ask every pool, reachable ones first, so the error
            # comes from a pool that could answer.
            def unreachable(name: str) -> bool:
                return not any(i.status in _LIVE for i in self.pools[name].instances)

            names = sorted(self.pools, key=unreachable)
        return [(n, self.pools[n], call) for n in names]

    async def execute(
        self, method: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        params = {} if params is None else params
        if method == _MERGED:
            return await self.list_models()
        errors: list[tuple[str, HubError]] = []
        pools = self.candidates(method, params, kwargs.get("instance"))
        for n, (name, provider, call) in enumerate(pools):
            try:
                with _fallback(_live_after(pools, n, method)):
                    result = await provider.execute(method, call, **kwargs)
            except ExecutionTimeout:
                raise  # the call's deadline is spent: another pool would overrun it
            except (NoResourceAvailable, ResourceFailed, UserError) as exc:
                exc.pool = name  # type: ignore[attr-defined]  # for the kernel's hints
                if not _may_move(provider, exc):
                    raise
                errors.append((name, exc))
                continue
            result.setdefault("pool", name)
            return result
        raise _combined(errors)

    async def stream(
        self, method: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        params = {} if params is None else params
        errors: list[tuple[str, HubError]] = []
        pools = self.candidates(method, params, kwargs.get("instance"))
        for n, (name, provider, call) in enumerate(pools):
            produced = False
            chunks = provider.stream(method, call, **kwargs)
            try:
                # Set only while waiting for the first chunk (where a 429 is met), so it
                # never leaks into the consumer's code between chunks.
                with _fallback(_live_after(pools, n, method)):
                    chunk = await anext(chunks, None)
                while chunk is not None:
                    produced = True
                    chunk.setdefault("pool", name)
                    yield chunk
                    chunk = await anext(chunks, None)
                return
            except (NoResourceAvailable, ResourceFailed, UserError) as exc:
                exc.pool = name  # type: ignore[attr-defined]  # for the kernel's hints
                if produced or isinstance(exc, ExecutionTimeout) or not _may_move(provider, exc):
                    raise  # output cannot be taken back: never restarted in another pool
                errors.append((name, exc))
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        raise _combined(errors)

    async def list_models(self) -> dict[str, Any]:
        """Every pool's models, each row with its ``pool``."""
        models: list[dict[str, Any]] = []
        reach: dict[str, Any] = {}
        for name, provider in self.pools.items():
            try:
                res = await provider.execute(_MERGED, {})
            except HubError:
                res = {"models": [], "instances": {}}
            models += [dict(m, pool=name) for m in res.get("models") or []]
            reach.update({f"{name}/{k}": v for k, v in (res.get("instances") or {}).items()})
        return {"models": models, "instances": reach}


def _live_after(pools: list[tuple[str, Any, dict[str, Any]]], n: int, method: str) -> bool:
    """A pool after the n-th has a live server that takes the call (one that only lists
    the model, with every server down, would just fail it)."""
    return any(_best_cost(p, method, call) is not None for _, p, call in pools[n + 1 :])


def _may_move(provider: Any, exc: HubError) -> bool:
    """May a call that failed in ``provider`` run in another pool? Not when it may have run
    and the pool's own policy never runs such a call twice (``retries=0``, or a provider
    that does not retry started calls)."""
    if not isinstance(exc, ResourceFailed) or not exc.started:
        return True
    return bool(getattr(provider, "retry_started_calls", True) and provider.retries > 0)


@contextmanager
def _fallback(more: bool) -> Iterator[None]:
    """Tell the pool whether another pool can take the call if its servers turn it away."""
    token = another_pool.set(more)
    try:
        yield
    finally:
        another_pool.reset(token)


def _combined(errors: list[tuple[str, HubError]]) -> HubError:
    """One error for a call no pool served: the first pool's, or all pools' when each
    said "not here"."""
    if len(errors) == 1:
        return errors[0][1]
    if not errors:
        return NoResourceAvailable("no LLM pool is running", hint="%gleitzeit add ollama URL")
    first = errors[0][1]
    if all(isinstance(e, UserError) for _, e in errors):
        text = "; ".join(f"{n}: {e.message}" for n, e in errors)
        return UserError(f"no pool can serve this call ({text})", hint=first.hint)
    # An infrastructure failure tells more than another pool's "I do not have it".
    for _, exc in errors:
        if not isinstance(exc, UserError):
            return exc
    return first
