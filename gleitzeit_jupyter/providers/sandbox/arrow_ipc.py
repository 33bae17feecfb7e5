"""DataFrames as Arrow IPC streams, with their exact dtypes or a clear refusal.

pandas' own metadata travels in the stream's schema, so what Arrow can carry comes back as it
left: tz-aware datetimes, categoricals, nullable Int/Float/boolean/string, decimals, plain
numbers, times and strings. A column Arrow cannot carry exactly (complex, period, interval,
sparse, an object column of mixed Python objects) is a :class:`CodecError` naming the column
and its dtype: nothing changes type silently on the way.

Reading is the trust boundary: a stream from the sandbox is refused unless every buffer
validates, it has no extension types (the one Arrow feature that could revive Python objects),
at most ``max_columns`` columns, and it would not grow far beyond its size as a DataFrame.

Stdlib-only at import time (pyarrow and pandas are imported when a frame needs them): the
same source runs inside the container.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArrowRefused", "read_frame", "write_frame"]

#: Rows per record batch: a stream is a sequence of chunks, never one giant message.
BATCH_ROWS = 1 << 16
#: Most a received stream may grow by as a DataFrame: a multiple of its size, plus slack.
_EXPANSION = 16
_SLACK = 16 * 1024 * 1024


class ArrowRefused(ValueError):
    """A frame cannot be written as Arrow exactly, or a stream is not a safe frame."""


def _plain_dtype(pd: Any, dtype: Any) -> str | None:
    """Why ``dtype`` cannot travel exactly, or None when it can."""
    import numpy as np

    if isinstance(dtype, np.dtype):
        if dtype.kind == "c":
            return "complex numbers have no Arrow type"
        if dtype.kind == "V":
            return "raw structured records have no Arrow type"
        return None
    if isinstance(dtype, pd.CategoricalDtype):
        return _plain_dtype(pd, dtype.categories.dtype)
    if isinstance(dtype, pd.ArrowDtype):
        return None
    safe = (pd.DatetimeTZDtype, pd.StringDtype, pd.BooleanDtype)
    numbers = tuple(
        getattr(pd, f"{kind}{bits}Dtype")
        for kind, sizes in (
            ("Int", (8, 16, 32, 64)),
            ("UInt", (8, 16, 32, 64)),
            ("Float", (32, 64)),
        )
        for bits in sizes
    )
    if isinstance(dtype, safe + numbers):
        return None
    return "Arrow has no exact type for it"


def _refuse(name: str, label: Any, dtype: Any, why: str) -> ArrowRefused:
    return ArrowRefused(
        f"cannot send {name!r}: column {label!r} has dtype {dtype}, which cannot travel"
        f" exactly ({why}); convert it first, e.g. df[{label!r}].astype(str)"
    )


def write_frame(df: Any, *, name: str = "value", max_columns: int | None = None) -> Any:
    """``df`` as one Arrow IPC stream (a ``pyarrow.Buffer``) in record batches."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.ipc

    if max_columns is not None and df.shape[1] > max_columns:
        raise ArrowRefused(
            f"cannot send {name!r}: {df.shape[1]:,} columns, over the limit of"
            f" {max_columns:,} (max_columns)"
        )
    _check_labels(pd, df.columns, name)
    index = df.index
    levels = [index.get_level_values(i) for i in range(index.nlevels)]
    for label, dtype in [*df.dtypes.items(), *((f"index {lv.name}", lv.dtype) for lv in levels)]:
        why = _plain_dtype(pd, dtype)
        if why is not None:
            raise _refuse(name, label, dtype, why)
    try:
        table = pa.Table.from_pandas(df)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        for label in df.columns:  # which column: the error names it only sometimes
            try:
                pa.array(df[label], from_pandas=True)
            except (pa.ArrowException, TypeError, ValueError):
                raise _refuse(name, label, df[label].dtype, _first_line(exc)) from None
        raise ArrowRefused(f"cannot send {name!r} as Arrow: {_first_line(exc)}") from None
    for field in table.schema:
        if isinstance(field.type, pa.ExtensionType):
            dtype = df[field.name].dtype if field.name in df.columns else field.type
            raise _refuse(name, field.name, dtype, "Arrow has no exact type for it")
    table = _mark_pyarrow_backed(pd, df, table)
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=BATCH_ROWS)
    return sink.getvalue()


def _mark_pyarrow_backed(pd: Any, df: Any, table: Any) -> Any:
    """``table`` with its pyarrow-backed columns named ``...[pyarrow]`` in the pandas
    metadata: pyarrow records some of them (decimals) as ``object``, which would come back as
    Python objects."""
    import json

    backed = {str(c) for c, t in df.dtypes.items() if isinstance(t, pd.ArrowDtype)}
    if not backed or table.schema.metadata is None:
        return table
    meta = json.loads(table.schema.metadata[b"pandas"])
    for col in meta.get("columns") or []:
        if col.get("field_name") in backed:
            col["numpy_type"] = "object[pyarrow]"  # the type is the field's own
    return table.replace_schema_metadata({**table.schema.metadata, b"pandas": json.dumps(meta)})


def _check_labels(pd: Any, columns: Any, name: str) -> None:
    """Column labels Arrow would not give back as they are: duplicates (which it cannot hold)
    and labels of mixed types (which it turns into strings)."""
    if not columns.is_unique:
        dups = list(dict.fromkeys(columns[columns.duplicated()]))[:5]
        raise ArrowRefused(
            f"cannot send {name!r}: duplicate column names {dups}; rename them first"
        )
    for i in range(columns.nlevels):
        level = columns.get_level_values(i)
        if level.dtype == object and "mixed" in pd.api.types.infer_dtype(level):
            raise ArrowRefused(
                f"cannot send {name!r}: column names of mixed types would come back as"
                " strings; convert them first, e.g. df.columns = df.columns.astype(str)"
            )


def _check_pandas_metadata(pd: Any, schema: Any) -> tuple[Any, list[tuple[Any, str]]]:
    """The schema's pandas metadata names each column's dtype and pyarrow constructs it: only
    a dtype :func:`write_frame` could have sent is accepted, so a forged stream cannot make
    any registered extension type build itself from hostile data.

    Returns the metadata to convert with and the (label, field) of pyarrow-backed columns:
    pyarrow cannot parse their names (``list<item: int64>[pyarrow]``) and would turn the
    others into numpy or pandas' own dtypes, so they are rebuilt from their Arrow type."""
    import json

    raw = (schema.metadata or {}).get(b"pandas")
    if raw is None:
        return None, []
    try:
        meta = json.loads(raw)
        columns = meta.get("columns") or []
    except (ValueError, AttributeError, RecursionError):
        raise ArrowRefused("refusing Arrow data: malformed pandas metadata") from None
    if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
        raise ArrowRefused("refusing Arrow data: malformed pandas metadata")
    backed = []
    for col in columns:
        label, numpy_type, field = col.get("name"), col.get("numpy_type"), col.get("field_name")
        if isinstance(numpy_type, str) and numpy_type.endswith("[pyarrow]"):
            if not isinstance(field, str) or schema.get_field_index(field) < 0:
                raise ArrowRefused(f"refusing Arrow data: column {label!r} has no field")
            col["numpy_type"] = "object"  # converted below, from the field's own type
            backed.append((label, field))
            continue
        try:
            dtype = pd.api.types.pandas_dtype(numpy_type)
        except Exception:
            raise ArrowRefused(
                f"refusing Arrow data: column {label!r} names an unknown dtype"
            ) from None
        if _plain_dtype(pd, dtype) is not None:
            raise ArrowRefused(
                f"refusing Arrow data: column {label!r} names dtype {dtype}, which no frame"
                " is sent with"
            )
    return (meta if backed else None), backed


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


# Bytes pandas spends on one cell that becomes a Python object (the pointer included): a
# bytes or str, a Decimal, an array for a list, a dict for a struct (and per field).
_OBJECT = 48
_DECIMAL = 112
_ARRAY = 120
_DICT, _FIELD = 72, 16


def _pandas_bytes(pa: Any, arr: Any) -> int:
    """About what ``arr`` costs as pandas (a None is a pointer), or ArrowRefused for a type a
    DataFrame from the sandbox never needs, among them those whose cells may share one
    buffer (views, run-end encoding)."""
    t, n = arr.type, len(arr)
    if pa.types.is_null(t):
        return 8 * n
    if pa.types.is_boolean(t):
        return n
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t):
        return n * max(1, t.bit_width // 8)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
    ):
        return n * _OBJECT + arr.nbytes
    if pa.types.is_decimal(t):
        return n * _DECIMAL
    if pa.types.is_dictionary(t):
        return n * max(1, t.index_type.bit_width // 8) + _pandas_bytes(pa, arr.dictionary)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return n * _ARRAY + _pandas_bytes(pa, arr.flatten())
    if pa.types.is_struct(t):
        children = arr.flatten()
        cost = n * (_DICT + _FIELD * len(children))
        return cost + sum(_pandas_bytes(pa, child) for child in children)
    raise ArrowRefused(f"refusing Arrow type {t}")


def read_frame(data: Any, *, max_columns: int | None = None) -> Any:
    """The DataFrame of one Arrow IPC stream (a bytes-like object), checked as hostile."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.ipc

    size = len(memoryview(data))
    try:
        reader = pyarrow.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
        # Checked before any batch is read: a frame too wide is refused at once.
        if max_columns is not None and len(schema) > max_columns:
            raise ArrowRefused(
                f"refusing a frame of {len(schema):,} columns, over the limit of"
                f" {max_columns:,} (max_columns)"
            )
        for field in schema:
            if isinstance(field.type, pa.ExtensionType):
                raise ArrowRefused(f"refusing Arrow extension type in column {field.name!r}")
        meta, backed = _check_pandas_metadata(pd, schema)
        table = reader.read_all()
        table.validate(full=True)
        built = sum(_pandas_bytes(pa, c) for col in table.columns for c in col.chunks)
    except pa.ArrowException as exc:
        raise ArrowRefused(f"invalid Arrow data: {_first_line(exc)}") from None
    # Arrow can describe far more than it carries (a null column has no buffers, a struct
    # without fields a bit per row, each becoming an object here): the kernel builds at most
    # a bounded multiple of what it received.
    if built > _EXPANSION * size + _SLACK:
        raise ArrowRefused(
            f"refusing Arrow data of {size:,} bytes that would take about {built:,} bytes"
            " as a DataFrame"
        )
    try:
        if meta is not None:
            import json

            table = table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})
        df = table.to_pandas()
        for label, field in backed:
            if label in df.columns:
                df[label] = pd.array(table.column(field), dtype=pd.ArrowDtype(table[field].type))
        return df
    except Exception as exc:  # malformed metadata fails in pyarrow's Python in many ways
        raise ArrowRefused(f"invalid Arrow data: {_first_line(exc)}") from None
