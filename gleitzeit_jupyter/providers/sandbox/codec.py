"""Safe transport of Python values between the kernel and the sandbox.

Only data formats travel: JSON for plain values, raw bytes for bytes, raw little-endian
buffers for numeric numpy arrays (and for DataFrames of plain numeric columns), and for other
DataFrames Arrow IPC (when both sides have pyarrow) or pandas' ``split`` JSON. Nothing is ever
pickled, so decoding a value that came out of the sandbox cannot run code in the kernel. A value
with no safe encoding is a :class:`CodecError` naming its type (or its column and dtype).

Binary payloads go to ``attach`` (a list) when the caller passes one: they then travel as
attachments of the message (see ``protocol``), referred to as ``{"a": index}``, instead of
base64 text inside it. Without ``attach`` they are base64, as JSON-only callers need.

This module is stdlib-only at import time (numpy / pandas / pyarrow are imported lazily when a
value needs them): the same source runs inside the container, injected by the bootstrap.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from typing import Any

try:  # on the host this is a normal package module
    from .arrow_ipc import ArrowRefused, read_frame, write_frame
except ImportError:  # inside the container the bootstrap has installed it
    from gleitzeit_arrow_ipc import (  # type: ignore[import-not-found,no-redef]
        ArrowRefused,
        read_frame,
        write_frame,
    )

__all__ = [
    "CodecError",
    "attachment_refs",
    "decode_value",
    "encode_value",
    "has_pyarrow",
    "shift_attachments",
]

# numpy dtype kinds whose raw buffer is plain data: bool, ints, floats, complex. Object arrays
# ("O") would need pickle, and are refused.
_SAFE_KINDS = "biufc"
_MAX_DEPTH = 100


class CodecError(ValueError):
    """A value cannot be sent across the sandbox boundary safely."""


def has_pyarrow() -> bool:
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
    except Exception:
        return False
    return True


def _is_plain(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (list, tuple):
        return all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _slots(enc: Any) -> list[dict[str, Any]]:
    """The parts of an encoded value that may name an attachment: the value itself, and a
    column frame's columns and index (never anything inside JSON data)."""
    if not isinstance(enc, dict):
        return []
    slots = [enc]
    if enc.get("fmt") == "columns":
        columns = enc.get("columns")
        slots += [c for c in columns if isinstance(c, dict)] if isinstance(columns, list) else []
        if isinstance(enc.get("index"), dict):
            slots.append(enc["index"])
    return slots


def attachment_refs(enc: Any) -> list[int]:
    """Indices of the attachments an encoded value names."""
    return [s["a"] for s in _slots(enc) if type(s.get("a")) is int]


def shift_attachments(enc: Any, by: int) -> None:
    """Shift the attachment indices an encoded value names by ``by`` (in place)."""
    for s in _slots(enc):
        if type(s.get("a")) is int:
            s["a"] += by


def _binary(enc: dict[str, Any], data: Any, attach: list[Any] | None) -> dict[str, Any]:
    if attach is None:
        enc["b64"] = base64.b64encode(data).decode("ascii")
    else:
        enc["a"] = len(attach)
        attach.append(data)
    return enc


def encode_value(
    value: Any,
    *,
    arrow: bool = False,
    name: str = "value",
    attach: list[Any] | None = None,
    max_columns: int | None = None,
) -> dict[str, Any]:
    """Encode ``value`` into a JSON-able dict, or raise :class:`CodecError`; binary payloads
    are appended to ``attach`` when given (see the module's docstring)."""
    if _is_plain(value):
        return {"t": "json", "v": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _binary({"t": "bytes"}, bytes(value), attach)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic) and value.dtype.kind in _SAFE_KINDS:
            return {"t": "json", "v": value.item()}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _SAFE_KINDS:
                raise CodecError(
                    f"cannot send {name!r}: numpy array of dtype {value.dtype} is not plain data"
                )
            dtype = value.dtype.newbyteorder("<")
            arr = np.ascontiguousarray(value.astype(dtype, copy=False))
            enc = {"t": "ndarray", "dtype": dtype.str, "shape": list(arr.shape)}
            if attach is None:
                return _binary(enc, arr.tobytes(), None)
            return _binary(enc, arr.reshape(-1).view(np.uint8), attach)
    pd = sys.modules.get("pandas")
    if pd is not None:
        opts = {"arrow": arrow, "name": name, "attach": attach, "max_columns": max_columns}
        if isinstance(value, pd.DataFrame):
            return _encode_frame(value, **opts)
        if isinstance(value, pd.Series):
            frame = _encode_frame(value.to_frame(name="__series__"), **opts)
            frame["t"] = "series"
            frame["name"] = value.name if _is_plain(value.name) else str(value.name)
            return frame
    raise CodecError(
        f"cannot send {name!r} of type {_type_name(value)} safely: supported are JSON values "
        "(None, bool, int, float, str, list, dict with str keys), bytes, numeric numpy arrays "
        "and pandas DataFrame/Series"
    )


def _encode_frame(
    df: Any, *, arrow: bool, name: str, attach: list[Any] | None, max_columns: int | None
) -> dict[str, Any]:
    if max_columns is not None and df.shape[1] > max_columns:
        raise CodecError(
            f"cannot send {name!r}: {df.shape[1]:,} columns, over the limit of"
            f" {max_columns:,} (max_columns)"
        )
    # Plain numeric columns: raw buffers, exact (complex too) and copy-free on arrival.
    columns = _encode_columns(df, attach)
    if columns is not None:
        return columns
    if arrow and has_pyarrow():
        try:
            stream = write_frame(df, name=name, max_columns=max_columns)
        except ArrowRefused as exc:
            raise CodecError(str(exc)) from None
        return _binary({"t": "dataframe", "fmt": "arrow"}, stream, attach)
    for col in df.columns:
        if df[col].dtype == object and not all(_is_plain(v) for v in df[col]):
            raise CodecError(f"cannot send {name!r}: column {col!r} holds non-JSON objects")
    try:
        data = df.to_json(orient="split", date_format="iso", date_unit="ns", double_precision=15)
    except Exception as exc:
        raise CodecError(f"cannot send {name!r} as JSON: {exc}") from None
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
    return {"t": "dataframe", "fmt": "split", "data": data, "dtypes": dtypes}


def _encode_columns(df: Any, attach: list[Any] | None = None) -> dict[str, Any] | None:
    """A frame of plain numeric columns (str labels, a default or numeric index) as raw column
    buffers: exact dtypes, and a small fraction of JSON's time and memory. None otherwise."""
    pd = sys.modules["pandas"]
    if not all(type(c) is str for c in df.columns):
        return None
    arrays = []
    for i in range(df.shape[1]):
        col = df.iloc[:, i]
        if (
            not isinstance(col.dtype, sys.modules["numpy"].dtype)
            or col.dtype.kind not in _SAFE_KINDS
        ):
            return None
        arrays.append(encode_value(col.to_numpy(), name=str(df.columns[i]), attach=attach))
    index = df.index
    if isinstance(index, pd.RangeIndex) and index.name is None:
        idx: Any = {"range": [index.start, index.stop, index.step]}
    elif index.dtype.kind in _SAFE_KINDS and index.nlevels == 1 and index.name is None:
        idx = encode_value(index.to_numpy(), name="index", attach=attach)
    else:
        return None
    return {
        "t": "dataframe",
        "fmt": "columns",
        "names": list(df.columns),
        "columns": arrays,
        "index": idx,
    }


def _decode_columns(enc: dict[str, Any], attachments: list[Any] | None, most: int | None) -> Any:
    import pandas as pd

    names, columns = _field(enc, "names", list), _field(enc, "columns", list)
    if most is not None and len(names) > most:
        raise CodecError(f"refusing a frame of {len(names):,} columns (max_columns {most:,})")
    if len(names) != len(columns) or not all(type(n) is str for n in names):
        raise CodecError("malformed encoded value: column names")
    if not all(isinstance(c, dict) and c.get("t") == "ndarray" for c in columns):
        raise CodecError("malformed encoded value: columns")
    arrays = [decode_value(c, attachments=attachments) for c in columns]
    idx = enc.get("index")
    if isinstance(idx, dict) and "range" in idx:
        bounds = idx["range"]
        if not (isinstance(bounds, list) and len(bounds) == 3):
            raise CodecError("malformed encoded value: index")
        if not all(type(b) is int for b in bounds) or bounds[2] == 0:
            raise CodecError("malformed encoded value: index")
        index: Any = pd.RangeIndex(*bounds)
    elif isinstance(idx, dict) and idx.get("t") == "ndarray":
        index = pd.Index(decode_value(idx, attachments=attachments))
    else:
        raise CodecError("malformed encoded value: index")
    for arr in arrays:
        if getattr(arr, "ndim", None) != 1 or len(arr) != len(index):
            raise CodecError("malformed encoded value: columns of different lengths")
    df = pd.DataFrame(dict(enumerate(arrays)), index=index, copy=False)
    df.columns = pd.Index(names)
    return df


def _field(enc: dict[str, Any], key: str, kind: type) -> Any:
    value = enc.get(key)
    if not isinstance(value, kind):
        raise CodecError(f"malformed encoded value: {key!r} is not a {kind.__name__}")
    return value


def _payload(enc: dict[str, Any], attachments: list[Any] | None) -> Any:
    """The binary payload of ``enc``: its attachment, or its base64 text decoded."""
    if "a" in enc:
        i = enc["a"]
        if attachments is None or type(i) is not int or not 0 <= i < len(attachments):
            raise CodecError("malformed encoded value: no such attachment")
        return attachments[i]
    try:
        return base64.b64decode(_field(enc, "b64", str), validate=True)
    except ValueError as exc:
        raise CodecError(f"malformed encoded value: {exc}") from None


def decode_value(
    enc: Any,
    *,
    arrow: bool = True,
    attachments: list[Any] | None = None,
    max_columns: int | None = None,
) -> Any:
    """Decode what :func:`encode_value` produced. Never executes code from the payload.

    The payload is treated as hostile: every field is type-checked, JSON values are plain
    data of bounded depth, attachments are taken by index only from ``attachments``, frames
    have at most ``max_columns`` columns, and Arrow is taken only when ``arrow`` (it was
    negotiated) and after a full validation of its buffers (a bad offset would otherwise
    crash pandas).
    """
    if not isinstance(enc, dict) or not isinstance(enc.get("t"), str):
        raise CodecError("malformed encoded value")
    kind = enc["t"]
    if kind == "json":
        value = enc.get("v")
        if not _is_plain(value):
            raise CodecError("malformed encoded value: not plain JSON data")
        return value
    if kind == "bytes":
        return bytes(_payload(enc, attachments))
    if kind == "ndarray":
        import numpy as np

        try:
            dtype = np.dtype(_field(enc, "dtype", str))
        except TypeError as exc:
            raise CodecError(f"refusing numpy dtype: {exc}") from None
        if dtype.kind not in _SAFE_KINDS or dtype.hasobject or dtype.fields is not None:
            raise CodecError(f"refusing numpy dtype {dtype}")
        dims = _field(enc, "shape", list)
        if len(dims) > 32 or not all(type(n) is int and n >= 0 for n in dims):
            raise CodecError("malformed encoded value: bad ndarray shape")
        buf = _payload(enc, attachments)
        count = 1
        for n in dims:
            count *= n
        if count * dtype.itemsize != len(memoryview(buf).cast("B")):
            raise CodecError("malformed encoded value: ndarray size does not match its shape")
        arr = np.frombuffer(buf, dtype=dtype).reshape(tuple(dims))
        # An attachment belongs to this array alone (and is writable); base64 text is copied.
        return arr if isinstance(buf, bytearray) else arr.copy()
    if kind in ("dataframe", "series"):
        if enc.get("fmt") == "arrow" and not arrow:
            raise CodecError("refusing Arrow data that was not asked for")
        df = _decode_frame(enc, attachments, max_columns)
        if kind == "series":
            series = df["__series__"]
            name = enc.get("name")
            series.name = name if name is None or type(name) in (str, int, float) else str(name)
            return series
        return df
    raise CodecError(f"unknown encoded value kind {kind!r}")


def _bounded_dtype(pd: Any, name: str) -> bool:
    """Whether a column may be converted to dtype ``name`` from the sender's map: one whose
    cells have a small fixed size (numbers, bools, times) or pandas' own string, nullable
    number and time-zone dtypes. ``S200000000`` would allocate 200 MB per cell here."""
    try:
        dtype = pd.api.types.pandas_dtype(name)
    except Exception:  # any name pandas cannot parse is simply not applied
        return False
    import numpy as np

    if isinstance(dtype, np.dtype):
        return dtype.kind in "biufcmM"
    safe = (pd.StringDtype, pd.BooleanDtype, pd.DatetimeTZDtype, pd.CategoricalDtype)
    numbers = tuple(
        getattr(pd, f"{kind}{bits}Dtype", type(None))
        for kind, sizes in (
            ("Int", (8, 16, 32, 64)),
            ("UInt", (8, 16, 32, 64)),
            ("Float", (32, 64)),
        )
        for bits in sizes
    )
    return isinstance(dtype, safe + numbers)


def _decode_frame(enc: dict[str, Any], attachments: list[Any] | None, most: int | None) -> Any:
    import pandas as pd

    if enc.get("fmt") == "arrow":
        try:
            return read_frame(_payload(enc, attachments), max_columns=most)
        except ArrowRefused as exc:
            raise CodecError(str(exc)) from None
    if enc.get("fmt") == "columns":
        return _decode_columns(enc, attachments, most)
    if enc.get("fmt") != "split":
        raise CodecError(f"unknown DataFrame format {enc.get('fmt')!r}")
    _field(enc, "data", str)
    if most is not None:
        try:
            width = len(json.loads(enc["data"]).get("columns") or ())
        except (ValueError, AttributeError, TypeError, RecursionError):
            raise CodecError("malformed encoded value: split data") from None
        if width > most:
            raise CodecError(f"refusing a frame of {width:,} columns (max_columns {most:,})")
    if not isinstance(enc.get("dtypes") or {}, dict):
        raise CodecError("malformed encoded value: dtypes")
    # No guessing: dtypes come from the sender's map below. (pandas 3 deprecates
    # convert_dates and needs only dtype=False; older pandas, e.g. Debian's, needs both.)
    legacy = int(pd.__version__.split(".")[0]) < 3
    df = pd.read_json(
        io.StringIO(enc["data"]),
        orient="split",
        dtype=False,
        **({"convert_dates": False} if legacy else {}),
    )
    # Each label by its text, the first of equal ones: looked up once per column, not by a
    # scan of all columns each time (quadratic: minutes for a few thousand columns).
    by_text: dict[str, Any] = {}
    for c in df.columns:
        by_text.setdefault(str(c), c)
    for col, dtype in (enc.get("dtypes") or {}).items():
        key = by_text.get(col) if isinstance(col, str) else None
        if key is None:
            continue
        if not isinstance(dtype, str) or not _bounded_dtype(pd, dtype):
            continue
        try:
            if dtype.startswith("datetime64"):
                df[key] = pd.to_datetime(df[key])
            elif dtype in ("category", "object"):
                continue
            else:
                df[key] = df[key].astype(dtype)
        except (TypeError, ValueError):
            continue  # keep the JSON-typed column rather than fail the whole value
    return df
