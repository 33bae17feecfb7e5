"""Values in and out of a run, on the worker's side (stdlib only; runs inside the container).

Inputs arrive decoded from the request and its attachments; the attachments are let go as soon
as each value is built, so a received frame costs about twice its size at the peak (its bytes
and the object made from them), not three times. Values asked for go back encoded, their binary
payloads as attachments of the result, each value and all of them within the run's caps.
"""

from __future__ import annotations

from typing import Any

try:  # on the host this is a normal package module
    from . import codec, protocol
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_codec as codec  # type: ignore[import-not-found,no-redef]
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]

__all__ = ["collect_values", "receive_inputs"]


def receive_inputs(req: dict[str, Any], ns: dict[str, Any]) -> None:
    """Decode the request's inputs into ``ns``, freeing each attachment once used."""
    attachments = req.pop("attachments", None)
    attachments = attachments if isinstance(attachments, list) else None
    inputs = req.get("inputs") or {}
    req["inputs"] = {}
    for name in list(inputs):
        enc = inputs.pop(name)
        ns[name] = codec.decode_value(enc, attachments=attachments)
        if attachments is not None:
            for i in codec.attachment_refs(enc):
                if 0 <= i < len(attachments):
                    attachments[i] = b""  # the value owns (or copied) it now


def _too_large(name: str, size: int, limit: int, which: str) -> dict[str, str]:
    return {
        "ename": "ValueTooLarge",
        "evalue": f"{name!r} is {size:,} bytes encoded, over the {limit:,} byte limit ({which})",
        "traceback": "",
    }


def collect_values(
    req: dict[str, Any], ns: dict[str, Any], limits: dict[str, int]
) -> tuple[dict[str, Any], list[Any], dict[str, str] | None]:
    """(encoded values, their attachments, the first error) for the names asked for."""
    values: dict[str, Any] = {}
    attachments: list[Any] = []
    error: dict[str, str] | None = None
    total, cap, total_cap = 0, limits["max_value_bytes"], limits["max_values_bytes"]
    for name in req.get("returns") or []:
        if name not in ns:
            error = error or {
                "ename": "NameError",
                "evalue": f"name {name!r} is not defined",
                "traceback": "",
            }
            continue
        value = ns[name]
        # Refuse a huge string before encoding it: the copy alone could exhaust the memory.
        if isinstance(value, (str, bytes, bytearray)) and len(value) > cap:
            error = error or _too_large(name, len(value), cap, "max_value_bytes")
            continue
        mine: list[Any] = []
        try:
            enc = codec.encode_value(
                value,
                arrow=bool(req.get("arrow")),
                name=name,
                attach=mine,
                max_columns=limits.get("max_columns"),
            )
            size = len(protocol.encode_frame(enc)) + sum(len(memoryview(a)) for a in mine)
        except Exception as exc:
            error = error or {"ename": "CodecError", "evalue": str(exc), "traceback": ""}
            continue
        if size > cap:
            error = error or _too_large(name, size, cap, "max_value_bytes")
        elif total + size > total_cap:
            error = error or _too_large(name, total + size, total_cap, "max_values_bytes")
        else:
            total += size
            codec.shift_attachments(enc, len(attachments))
            attachments += mine
            values[name] = enc
    return values, attachments, error
