"""Safe transport of Python values between the kernel and the sandbox.

Only data formats travel: JSON for plain values, base64 for bytes, raw little-endian buffers
for numeric numpy arrays, and for DataFrames Arrow IPC (when both sides have pyarrow) or
pandas' ``split`` JSON. Nothing is ever pickled, so decoding a value that came out of the
sandbox cannot run code in the kernel. A value with no safe encoding is a :class:`CodecError`
naming its type.

This module is stdlib-only at import time (numpy / pandas / pyarrow are imported lazily when a
value needs them): the same source runs inside the container, injected by the bootstrap.
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

__all__ = ["CodecError", "decode_value", "encode_value", "has_pyarrow"]

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


def encode_value(value: Any, *, arrow: bool = False, name: str = "value") -> dict[str, Any]:
    """Encode ``value`` into a JSON-able dict, or raise :class:`CodecError`."""
    if _is_plain(value):
        return {"t": "json", "v": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"t": "bytes", "b64": base64.b64encode(bytes(value)).decode("ascii")}
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic) and value.dtype.kind in _SAFE_KINDS:
            return {"t": "json", "v": value.item()}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _SAFE_KINDS:
                raise CodecError(
                    f"cannot send {name!r}: numpy array of dtype {value.dtype} is not plain data"
                )
            arr = np.ascontiguousarray(value)
            dtype = arr.dtype.newbyteorder("<")
            return {
                "t": "ndarray",
                "dtype": dtype.str,
                "shape": list(arr.shape),
                "b64": base64.b64encode(arr.astype(dtype, copy=False).tobytes()).decode("ascii"),
            }
    pd = sys.modules.get("pandas")
    if pd is not None:
        if isinstance(value, pd.DataFrame):
            return _encode_frame(value, arrow=arrow, name=name)
        if isinstance(value, pd.Series):
            frame = _encode_frame(value.to_frame(name="__series__"), arrow=arrow, name=name)
            frame["t"] = "series"
            frame["name"] = value.name if _is_plain(value.name) else str(value.name)
            return frame
    raise CodecError(
        f"cannot send {name!r} of type {_type_name(value)} safely: supported are JSON values "
        "(None, bool, int, float, str, list, dict with str keys), bytes, numeric numpy arrays "
        "and pandas DataFrame/Series"
    )


def _encode_frame(df: Any, *, arrow: bool, name: str) -> dict[str, Any]:
    if arrow and has_pyarrow():
        import pyarrow as pa
        import pyarrow.ipc

        try:
            table = pa.Table.from_pandas(df)
        except Exception as exc:
            raise CodecError(f"cannot send {name!r} as Arrow: {exc}") from None
        sink = io.BytesIO()
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return {
            "t": "dataframe",
            "fmt": "arrow",
            "b64": base64.b64encode(sink.getvalue()).decode("ascii"),
        }
    for col in df.columns:
        if df[col].dtype == object and not all(_is_plain(v) for v in df[col]):
            raise CodecError(f"cannot send {name!r}: column {col!r} holds non-JSON objects")
    try:
        data = df.to_json(orient="split", date_format="iso", date_unit="ns", double_precision=15)
    except Exception as exc:
        raise CodecError(f"cannot send {name!r} as JSON: {exc}") from None
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
    return {"t": "dataframe", "fmt": "split", "data": data, "dtypes": dtypes}


def decode_value(enc: Any) -> Any:
    """Decode what :func:`encode_value` produced. Never executes code from the payload."""
    if not isinstance(enc, dict) or not isinstance(enc.get("t"), str):
        raise CodecError("malformed encoded value")
    kind = enc["t"]
    if kind == "json":
        return enc.get("v")
    if kind == "bytes":
        return base64.b64decode(enc["b64"], validate=True)
    if kind == "ndarray":
        import numpy as np

        dtype = np.dtype(str(enc["dtype"]))
        if dtype.kind not in _SAFE_KINDS or dtype.hasobject:
            raise CodecError(f"refusing numpy dtype {dtype}")
        shape = tuple(int(n) for n in enc["shape"])
        buf = base64.b64decode(enc["b64"], validate=True)
        return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    if kind in ("dataframe", "series"):
        df = _decode_frame(enc)
        if kind == "series":
            series = df["__series__"]
            series.name = enc.get("name")
            return series
        return df
    raise CodecError(f"unknown encoded value kind {kind!r}")


def _decode_frame(enc: dict[str, Any]) -> Any:
    import pandas as pd

    if enc.get("fmt") == "arrow":
        import pyarrow as pa
        import pyarrow.ipc

        reader = pyarrow.ipc.open_stream(base64.b64decode(enc["b64"], validate=True))
        # Extension types are the one Arrow feature that could deserialize Python objects
        # (PyExtensionType used pickle); a DataFrame from the sandbox never needs them.
        for field in reader.schema:
            if isinstance(field.type, pa.ExtensionType):
                raise CodecError(f"refusing Arrow extension type in column {field.name!r}")
        return reader.read_all().to_pandas()
    if enc.get("fmt") != "split":
        raise CodecError(f"unknown DataFrame format {enc.get('fmt')!r}")
    # No guessing: dtypes come from the sender's map below. (pandas 3 deprecates
    # convert_dates and needs only dtype=False; older pandas, e.g. Debian's, needs both.)
    legacy = int(pd.__version__.split(".")[0]) < 3
    df = pd.read_json(
        io.StringIO(enc["data"]),
        orient="split",
        dtype=False,
        **({"convert_dates": False} if legacy else {}),
    )
    for col, dtype in (enc.get("dtypes") or {}).items():
        key = next((c for c in df.columns if str(c) == col), None)
        if key is None:
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
