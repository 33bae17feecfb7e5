"""Which rich outputs of a sandbox run may reach the page, and in what form.

Everything in a MIME bundle from the sandbox was produced by code nobody has read, and a
front end renders outputs of the running kernel as trusted: HTML runs its scripts, an SVG its
event handlers, Markdown its ``javascript:`` links. So, on the host, before anything is shown:

* ``text/plain`` and ``application/json`` pass (capped);
* ``image/png`` and ``image/jpeg`` pass only when their bytes start like that image;
* ``text/html`` and ``image/svg+xml`` are rebuilt by nh3 from an allowlist: no scripts, event
  handlers, styles, frames, forms or remote resources (a remote ``<img>`` would leak data the
  run computed through the browser, past the sandbox's missing network);
* ``text/markdown`` is rendered here with raw HTML escaped, then cleaned like HTML;
* everything else (``application/javascript``, widget views, LaTeX, ...) is dropped.

An entry over ``max_mime_bytes`` is replaced by a note; a run keeps at most ``max_outputs``
outputs of ``max_total_bytes`` together.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import nh3

__all__ = [
    "OutputLimits",
    "safe_bundle",
    "safe_outputs",
    "sanitize_html",
    "sanitize_svg",
    "utf8_text",
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class OutputLimits:
    max_mime_bytes: int = 4 * MiB
    max_outputs: int = 100
    max_total_bytes: int = 32 * MiB


# HTML: nh3's defaults minus elements that fetch from elsewhere (img, map/area); links stay,
# since following one needs a click, but only to http(s)/mailto.
_HTML_TAGS = set(nh3.ALLOWED_TAGS) - {"img", "map", "area"}
_HTML_ATTRIBUTES = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items() if k in _HTML_TAGS}
_URL_SCHEMES = {"http", "https", "mailto"}

_SVG_TAGS = {
    "svg", "g", "defs", "title", "desc", "symbol", "path", "rect", "circle", "ellipse", "line",
    "polyline", "polygon", "text", "tspan", "clipPath", "mask", "pattern", "marker",
    "linearGradient", "radialGradient", "stop",
}  # fmt: skip
_SVG_COMMON = {
    "id", "class", "transform", "fill", "fill-opacity", "fill-rule", "stroke", "stroke-width",
    "stroke-opacity", "stroke-linecap", "stroke-linejoin", "stroke-dasharray",
    "stroke-dashoffset", "stroke-miterlimit", "opacity", "clip-path", "clip-rule", "mask",
    "font-family", "font-size", "font-weight", "font-style", "text-anchor",
    "dominant-baseline", "visibility", "display", "color", "vector-effect", "marker-start",
    "marker-mid", "marker-end",
}  # fmt: skip
_SVG_GEOMETRY = {
    "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "width", "height", "d",
    "points", "dx", "dy", "viewBox", "preserveAspectRatio", "version", "xmlns",
    "offset", "stop-color", "stop-opacity", "gradientUnits", "gradientTransform", "fx", "fy",
    "patternUnits", "patternTransform", "clipPathUnits", "maskUnits", "markerWidth",
    "markerHeight", "refX", "refY", "orient", "textLength", "lengthAdjust",
}  # fmt: skip
_SVG_ATTRIBUTES = {tag: _SVG_COMMON | _SVG_GEOMETRY for tag in _SVG_TAGS}


# SVG attribute values are CSS values to the browser: besides url(...), image-set('...') and
# friends fetch a URL, and CSS escapes (\\75rl) spell any name. So a value may call only
# these functions, url() only with a local #id, and may hold no backslash or quote.
_CSS_FUNCTION = re.compile(r"([A-Za-z_-][A-Za-z0-9_-]*)?\s*\(")
_CSS_FUNCTIONS = {
    "url", "rgb", "rgba", "hsl", "hsla", "matrix", "translate", "scale", "rotate", "skewx",
    "skewy",
}  # fmt: skip
_LOCAL_URL = re.compile(r"url\(\s*#[A-Za-z0-9_.:-]*\s*\)", re.IGNORECASE)


def _local_refs_only(tag: str, attr: str, value: str) -> str | None:
    if any(c in value for c in "\\'\"") or "/*" in value:
        return None
    for match in _CSS_FUNCTION.finditer(value):
        name = (match.group(1) or "").lower()
        if name not in _CSS_FUNCTIONS:
            return None
        if name == "url" and not _LOCAL_URL.match(value, match.start()):
            return None
    return value


def sanitize_html(text: str) -> str:
    return nh3.clean(
        text,
        tags=_HTML_TAGS,
        attributes=_HTML_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
    )


def sanitize_svg(text: str) -> str:
    return nh3.clean(
        text,
        tags=_SVG_TAGS,
        attributes=_SVG_ATTRIBUTES,
        url_schemes=set(),
        attribute_filter=_local_refs_only,
    )


def _markdown_to_html(text: str) -> str | None:
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # without a renderer the Markdown is dropped (text/plain remains)
        return None
    # html=False: raw HTML in the source is shown as text, never parsed as markup.
    return sanitize_html(MarkdownIt("commonmark", {"html": False}).render(text))


_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",)}


def _image(mime: str, value: str) -> str | None:
    try:
        raw = base64.b64decode(value.replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_MAGIC[mime]):
        return None
    return base64.b64encode(raw).decode("ascii")


def utf8_text(text: str) -> str:
    """``text`` with lone surrogates written out (``\\ud800``): JSON from the sandbox may
    carry them, and Jupyter cannot send a message holding one (it is not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _utf8_json(value: Any) -> Any:
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(text.encode("utf-8", "replace"))
    return value


def _json_size(value: Any) -> int | None:
    try:
        return len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return None


def _too_big(mime: str, size: int, limit: int) -> str:
    return (
        f"[gleitzeit: {mime} output of {size:,} bytes not shown: over the {limit:,} byte"
        " limit (max_mime_bytes)]"
    )


def safe_bundle(data: dict[Any, Any], limits: OutputLimits) -> dict[str, Any]:
    """The part of one MIME bundle that may be shown, each entry sanitised and capped."""
    out: dict[str, Any] = {}
    notes: list[str] = []
    cap = limits.max_mime_bytes
    for mime, value in data.items():
        if mime == "application/json":
            size = _json_size(value) if isinstance(value, (dict, list)) else None
            if size is not None and size <= cap:
                out[mime] = _utf8_json(value)
            elif size is not None:
                notes.append(_too_big(mime, size, cap))
            continue
        if not isinstance(mime, str) or not isinstance(value, str):
            continue
        value = utf8_text(value)
        if len(value) > cap:
            if mime in ("text/plain", "text/html", "text/markdown", "image/svg+xml",
                        "image/png", "image/jpeg"):  # fmt: skip
                notes.append(_too_big(mime, len(value), cap))
            continue
        clean: str | None = None
        if mime == "text/plain":
            clean = value
        elif mime in _MAGIC:
            clean = _image(mime, value)
        elif mime == "text/html":
            clean = sanitize_html(value)
        elif mime == "image/svg+xml":
            clean = sanitize_svg(value)
        elif mime == "text/markdown":
            html = _markdown_to_html(value)
            if html is not None:
                out.setdefault("text/html", html)
            continue
        if clean is not None:
            out[mime] = clean
    if notes:
        text = out.get("text/plain", "")
        out["text/plain"] = "\n".join([text, *notes]) if text else "\n".join(notes)
    return out


def safe_outputs(outputs: Any, limits: OutputLimits | None = None) -> list[dict[str, Any]]:
    """Outputs of a run as they may be shown; anything malformed is left out."""
    limits = limits or OutputLimits()
    safe: list[dict[str, Any]] = []
    items = outputs if isinstance(outputs, list) else []
    budget = limits.max_total_bytes
    for out in items[: limits.max_outputs]:
        data = out.get("data") if isinstance(out, dict) else None
        if not isinstance(data, dict):
            continue
        kept = safe_bundle(data, limits)
        size = sum(len(v) if isinstance(v, str) else _json_size(v) or 0 for v in kept.values())
        if size > budget:
            note = "[gleitzeit: output not shown: the run's outputs are over max_total_bytes]"
            kept = {"text/plain": note}
        budget -= size
        if kept:
            kind = out.get("type")
            safe.append(
                {"type": kind if kind == "execute_result" else "display_data", "data": kept}
            )
    if len(items) > limits.max_outputs:
        note = (
            f"[gleitzeit: {len(items) - limits.max_outputs} more outputs not shown: over the"
            f" limit of {limits.max_outputs} per run (max_outputs)]"
        )
        safe.append({"type": "display_data", "data": {"text/plain": note}})
    return safe
