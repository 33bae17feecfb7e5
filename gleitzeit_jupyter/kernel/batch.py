"""``%%llm --map``: one call per row, concurrently across the pool, into an aligned Series.

Rows are rendered on the notebook thread (the template sees the row and the user namespace),
sent concurrently from the runtime loop (bounded by ``concurrency``; the hub spreads them over
the instances and queues the rest), and collected back on the notebook thread, which drives the
progress bar. A failed row holds its error; it never aborts the batch. The summary line
counts rows, lists the failed ones, and totals the tokens the rows used.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..hub.errors import HubError, UserError
from .interpolate import interpolate
from .render import CellInterrupted

__all__ = ["BatchInterrupted", "BatchOutcome", "map_rows", "render_prompts", "run_batch"]

_LISTED = 10  # failed rows named in the summary line; the rest are counted


class BatchInterrupted(CellInterrupted):
    """Interrupted mid-batch; ``partial`` holds the rows done so far (others are None)."""

    def __init__(self, what: str, partial: pd.Series) -> None:
        super().__init__(what)
        self.partial = partial


@dataclass
class BatchOutcome:
    series: pd.Series
    ok: int
    failed: int
    elapsed_s: float
    instances: dict[str, int] = field(default_factory=dict)
    first_failure: tuple[Any, BaseException] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens_per_s(self) -> float | None:
        """Aggregate generation speed: every row's completion tokens over the batch's time."""
        if not self.completion_tokens or self.elapsed_s <= 0:
            return None
        return self.completion_tokens / self.elapsed_s

    def failed_rows(self) -> list[Any]:
        return [_label(i) for i, v in self.series.items() if isinstance(v, BaseException)]

    def summary(self) -> str:
        total = self.ok + self.failed
        text = f"--map: {total} rows, {self.ok} ok, {self.failed} failed in {self.elapsed_s:.1f} s"
        if self.instances:
            spread = ", ".join(f"{k}: {v}" for k, v in sorted(self.instances.items()))
            text += f" ({spread})"
        if self.prompt_tokens or self.completion_tokens:
            text += f"; {self.prompt_tokens:,} → {self.completion_tokens:,} tokens"
            if self.tokens_per_s is not None:
                text += f", {self.tokens_per_s:,.1f} tok/s"
        if self.failed:
            rows = self.failed_rows()
            shown = ", ".join(repr(i) for i in rows[:_LISTED])
            more = f" and {len(rows) - _LISTED} more" if len(rows) > _LISTED else ""
            text += f"; failed rows: {shown}{more}"
        if self.first_failure is not None:
            idx, exc = self.first_failure
            msg = " ".join(str(exc).split())
            text += f"; first failure at row {idx!r}: {type(exc).__name__}: {msg}"
        return text


def map_rows(obj: Any) -> tuple[pd.Index, list[dict[str, Any]]]:
    """Index and per-row template namespaces of what ``--map`` names.

    DataFrame rows expose their columns by name plus ``item`` (the row) and ``index``;
    a column of that name wins (``reset_index()`` makes an ``index`` column, and a prompt
    naming it means the column); a Series, list or other iterable exposes ``item`` and
    ``index``; a dict maps keys to values (the keys become the index).
    """
    if isinstance(obj, pd.DataFrame):
        rows = []
        for idx, row in obj.iterrows():
            ns: dict[str, Any] = {"item": row, "index": idx}
            ns.update((str(k), v) for k, v in row.items())
            rows.append(ns)
        return obj.index, rows
    if isinstance(obj, pd.Series):
        return obj.index, [{"item": v, "index": i} for i, v in obj.items()]
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        return pd.Index(keys), [{"item": obj[k], "index": k} for k in keys]
    if isinstance(obj, (str, bytes)) or not hasattr(obj, "__iter__"):
        raise UserError(
            f"--map needs a DataFrame, Series, list or other iterable, not {type(obj).__name__}"
        )
    items = list(obj)
    return pd.RangeIndex(len(items)), [{"item": v, "index": i} for i, v in enumerate(items)]


def render_prompts(
    template: str, rows: list[dict[str, Any]], user_ns: Mapping[str, Any]
) -> list[str | BaseException]:
    """One prompt per row. A template that fails on the first row is wrong for every row, so
    that raises; a later row that fails (e.g. a missing attribute on one item) holds its error.
    """
    prompts: list[str | BaseException] = []
    for pos, row in enumerate(rows):
        try:
            prompts.append(interpolate(template, row, user_ns))
        except HubError as exc:
            if pos == 0:
                raise
            prompts.append(exc)
    return prompts


#: One row's call: its request (a prompt, or whatever the caller rendered) to
#: ``(value, instance)`` or ``(value, instance, usage)``; ``usage`` is the finished call's
#: Ollama counters (``prompt_eval_count``, ``eval_count``). A value that is an exception
#: (an answer that failed validation) marks the row failed; its tokens still count.
Call = Callable[[Any], Awaitable[tuple[Any, ...]]]
_Done = tuple[int, Any, str | None, BaseException | None, dict[str, Any] | None]


async def _produce(prompts: list[Any], call: Call, concurrency: int) -> AsyncIterator[_Done]:
    """Yield (position, value, instance, error, usage) as rows finish.

    ``concurrency`` workers pull rows from a shared iterator, so a 100,000-row batch holds
    ``concurrency`` tasks, not one per row, and never floods the hub's queue.
    """
    done: asyncio.Queue[_Done] = asyncio.Queue()
    todo = iter([(pos, p) for pos, p in enumerate(prompts) if not isinstance(p, BaseException)])
    for pos, prompt in enumerate(prompts):
        if isinstance(prompt, BaseException):
            done.put_nowait((pos, None, None, prompt, None))

    async def worker() -> None:
        for pos, prompt in todo:  # shared iterator: each row is taken by one worker
            try:
                value, instance, *rest = await call(prompt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                done.put_nowait((pos, None, None, exc, None))
                continue
            usage = rest[0] if rest else None
            if isinstance(value, BaseException):
                done.put_nowait((pos, None, instance, value, usage))
            else:
                done.put_nowait((pos, value, instance, None, usage))

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        for _ in range(len(prompts)):
            yield await done.get()
    finally:
        # Interrupted or abandoned: stop every row still running; queued ones never start.
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def _progress_bar(total: int, desc: str) -> Any:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover
        shell = None
    if shell is not None and type(shell).__name__ == "ZMQInteractiveShell":
        # A real kernel: the widget bar (tqdm.auto decides once, at import time, which is
        # wrong when the module was first imported outside the kernel).
        from .widgets.progress import NotebookProgress as notebook_tqdm

        return notebook_tqdm(total=total, desc=desc)
    from tqdm.std import tqdm as std_tqdm

    return std_tqdm(total=total, desc=desc, file=sys.stderr)


def _label(value: Any) -> Any:
    # A row label as the user wrote it: 22, not np.int64(22); (1, 'x') in a MultiIndex.
    if isinstance(value, tuple):
        return tuple(_label(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def _count(usage: dict[str, Any] | None, key: str) -> int:
    value = (usage or {}).get(key)
    return int(value) if isinstance(value, (int, float)) and value > 0 else 0


def run_batch(
    runtime: Any,
    prompts: list[Any],
    index: pd.Index,
    call: Call,
    *,
    concurrency: int,
    name: str | None = None,
    desc: str = "llm --map",
    progress: bool = True,
) -> BatchOutcome:
    """Run ``call`` for every prompt on the runtime loop; collect on this thread."""
    values: list[Any] = [None] * len(prompts)
    instances: dict[str, int] = {}
    ok = failed = 0
    sent = got = 0
    first_pos: int | None = None
    start = time.perf_counter()
    bar = _progress_bar(len(prompts), desc) if progress else None
    try:
        for pos, value, instance, exc, usage in runtime.stream(
            lambda: _produce(prompts, call, concurrency)
        ):
            sent += _count(usage, "prompt_eval_count")
            got += _count(usage, "eval_count")
            if exc is not None:
                values[pos] = exc
                failed += 1
                if first_pos is None or pos < first_pos:
                    first_pos = pos
            else:
                values[pos] = value
                ok += 1
                if instance:
                    instances[instance] = instances.get(instance, 0) + 1
            if bar is not None:
                bar.update(1)
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)
    except KeyboardInterrupt:
        partial = pd.Series(values, index=index, name=name, dtype=object)
        raise BatchInterrupted(
            f"%%llm --map stopped after {ok + failed} of {len(prompts)} rows"
            f" ({failed} failed); rows not done are None",
            partial,
        ) from None
    finally:
        if bar is not None:
            bar.close()
    series = pd.Series(values, index=index, name=name, dtype=object)
    return BatchOutcome(
        series=series,
        ok=ok,
        failed=failed,
        elapsed_s=time.perf_counter() - start,
        instances=instances,
        first_failure=None if first_pos is None else (_label(index[first_pos]), values[first_pos]),
        prompt_tokens=sent,
        completion_tokens=got,
    )
