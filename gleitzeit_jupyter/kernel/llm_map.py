"""``%%llm --map`` rows as model calls: each row's request (prompt and images), the call,
and the result: a Series of answers, or with ``--schema`` a DataFrame with one column per
field of the schema.

In the schema DataFrame a row that failed (its answer did not validate, or its call failed)
holds NaN/None in every column; its error is kept in ``df.attrs["errors"]`` (row label to
exception; a validation error carries the raw answer on ``.raw``), and the summary line
lists the failed rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
from IPython.core.error import UsageError

from ..hub.errors import HubError, UserError
from . import batch
from .batch import Call
from .llm import LlmOptions, build_request, finish_value, store, text_of
from .llm_images import encode_image
from .llm_schema import SchemaError
from .render import CellError, cell_error
from .thinking import thinking_of, with_thinking

__all__ = ["RowRequest", "map_result", "row_caller", "row_requests", "run_map"]


@dataclass(frozen=True)
class RowRequest:
    """One row's call: the rendered prompt and the row's ``--image {column}`` values (paths or
    bytes, encoded only when the row is sent, so a large batch never holds every image)."""

    prompt: str
    images: tuple[tuple[str, Any], ...] = ()


def row_requests(
    prompts: list[str | BaseException], rows: list[Mapping[str, Any]], opts: LlmOptions
) -> list[RowRequest | BaseException]:
    """Pair each rendered prompt with its row's images; a row whose prompt failed keeps its
    error. A column that is not there is wrong for every row, so that raises."""
    for column in opts.image_columns:
        if rows and column not in rows[0]:
            raise UserError(
                f"--image {{{column}}}: no column {column!r} in the --map rows",
                hint=f"columns: {', '.join(k for k in rows[0] if k not in ('item', 'index'))}",
            )
    out: list[RowRequest | BaseException] = []
    for prompt, row in zip(prompts, rows, strict=True):
        if isinstance(prompt, BaseException):
            out.append(prompt)
            continue
        images = tuple((c, row[c]) for c in opts.image_columns)
        out.append(RowRequest(prompt, images))
    return out


def row_caller(provider: Any, opts: LlmOptions, default_model: str) -> Call:
    """The call for one row: ``(value, instance, usage)``. An answer that does not validate
    against ``--schema`` is returned as its error (the row fails; its tokens still count)."""

    async def call(req: RowRequest) -> tuple[Any, str | None, dict[str, Any]]:
        row_opts = opts
        if req.images:
            encoded = await asyncio.to_thread(
                lambda: [encode_image(v, f"--image {{{c}}}") for c, v in req.images]
            )
            row_opts = replace(opts, images=[*opts.images, *encoded])
        method, params, kwargs = build_request(row_opts, req.prompt, default_model, None)
        if opts.timeout:
            kwargs["timeout"] = opts.timeout
        res = await provider.execute(method, params, **kwargs)
        instance = res.get("instance")
        try:
            # Off the loop: a validator may be slow, and the loop serves every other row.
            value = await asyncio.to_thread(finish_value, opts, text_of(res))
        except HubError as exc:
            exc.instance = exc.instance or instance
            if isinstance(exc, SchemaError):
                exc.thinking = thinking_of(res)
            return exc, instance, res
        return with_thinking(value, thinking_of(res)), instance, res

    return call


def map_result(series: pd.Series, opts: LlmOptions) -> pd.Series | pd.DataFrame:
    """What ``--map`` stores: the Series of answers, or with a schema one column per field."""
    schema = opts.schema
    if schema is None:
        return series
    errors = {i: v for i, v in series.items() if isinstance(v, BaseException)}
    records = [
        {} if v is None or isinstance(v, BaseException) else schema.columns(v) for v in series
    ]
    columns = list(schema.fields) or ["value"]
    frame = pd.DataFrame.from_records(records, index=series.index, columns=columns)
    frame.attrs["errors"] = errors
    return frame


def run_map(
    shell: Any,
    runtime: Callable[[], Any],
    args: Any,
    opts: LlmOptions,
    cell: str,
    *,
    concurrency: int,
    default_model: str | None,
    show: bool = True,
) -> Any:
    """``%%llm --map EXPR``: the cell is the template, run once per row of EXPR (evaluated in
    ``shell``); ``concurrency`` and ``default_model`` apply where ``args`` name none. With
    ``show=False`` (the line form) the result is returned instead of displayed."""
    if args.tools or args.max_steps is not None:
        raise UsageError("--tools and --max-steps do not apply with --map")
    if opts.chat:
        raise UsageError("--map and --chat do not mix: each row is its own conversation")
    if args.raw:
        raise UsageError("--map and --raw do not mix: the rows fill the template's {column}s")
    template = cell.strip("\n")
    if not template.strip():
        raise UsageError("%%llm --map: the cell is the per-row template, and it is empty")
    try:
        target = shell.ev(args.map_expr)
    except Exception as exc:
        raise CellError(
            f"--map {args.map_expr}: {type(exc).__name__}: {exc}", kind="UsageError"
        ) from None
    concurrency = args.concurrency if args.concurrency is not None else concurrency
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    rt = runtime()
    try:
        index, rows = batch.map_rows(target)
        prompts = batch.render_prompts(template, rows, shell.user_ns)
    except HubError as exc:
        raise cell_error(exc, context="%%llm --map") from None
    try:
        provider = rt.llm(opts.model or default_model)
    except Exception as exc:
        raise cell_error(exc, context="%%llm --map") from None
    row_opts = LlmOptions(**{**opts.__dict__, "stream": False})
    try:
        requests = row_requests(prompts, rows, row_opts)
    except HubError as exc:
        raise cell_error(exc, context="%%llm --map") from None
    call = row_caller(provider, row_opts, default_model)
    name = opts.out or None
    try:
        outcome = batch.run_batch(rt, requests, index, call, concurrency=concurrency, name=name)
    except batch.BatchInterrupted as exc:
        store(shell.user_ns, opts.out, map_result(exc.partial, opts))
        raise
    print(outcome.summary())
    result = map_result(outcome.series, opts)
    store(shell.user_ns, opts.out, result)
    if not show:
        return result
    if not opts.out:
        # Without -o the result is the cell's value, shown like any other value.
        shell.displayhook(result)
    return None
