"""``%%llm --image X``: images for vision models, as the base64 strings Ollama's ``images``
field takes.

X names a variable holding a file path (``str`` or ``pathlib.Path``), raw ``bytes``, base64
text or a ``data:`` URL (as the official Ollama client takes them), a PIL image or a
matplotlib figure; a name that is not a variable is read as a file path. With
``--map``, ``--image {column}`` takes each row's image (a path or bytes) from that column.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hub.errors import UserError

__all__ = ["MAX_IMAGE_BYTES", "ImageError", "encode_image", "image_column", "resolve_images"]

#: The largest image sent. Vision models scale every image down to a few hundred pixels,
#: and a bigger one is held three times over (bytes, base64, request body) per call.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

_COLUMN = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.I)


class ImageError(UserError):
    """An ``--image`` that cannot be read or encoded."""


def _png_of(value: Any, what: str) -> bytes | None:
    """PNG bytes of a matplotlib figure or a PIL image (duck-typed: neither is a dependency)."""
    buf = io.BytesIO()
    if callable(getattr(value, "savefig", None)):
        value.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()
    if callable(getattr(value, "save", None)) and hasattr(value, "mode") and hasattr(value, "size"):
        image = value if value.mode in ("RGB", "RGBA", "L") else value.convert("RGBA")
        image.save(buf, format="PNG")
        return buf.getvalue()
    return None


def _mb(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


def _too_big(what: str, size: int) -> ImageError:
    return ImageError(
        f"{what} is {_mb(size)}; the limit is {MAX_IMAGE_BYTES // 1024**2} MB",
        hint="scale it down first, e.g. PIL's Image.thumbnail((2048, 2048))",
    )


# Leading bytes of the formats vision servers decode. Anything else is refused before it is
# sent: a path column from untrusted data must not ship a private key to a server.
_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little- and big-endian
    b"MM\x00*",
)


_FORMATS = "PNG, JPEG, GIF, WebP, BMP or TIFF"


def _is_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data.startswith(_MAGIC)


def _shown(p: Path) -> str:
    text = str(p)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _base64_text(value: str) -> bytes | None:
    """The bytes of base64 text or a data URL; None for anything else (a path, say)."""
    text = _DATA_URL.sub("", value, count=1)
    if len(text) < 64 or len(text) % 4 or os.path.exists(value):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path).expanduser()
    try:
        # Looked at before opening: a pipe blocks the open until a writer comes, and a
        # device such as /dev/zero never ends.
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{what}: {_shown(p)} is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{what}: {_shown(p)} is not a regular file (a device or a pipe)")
        if st.st_size > MAX_IMAGE_BYTES:
            raise _too_big(what, st.st_size)
        with p.open("rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)  # bounded: the file may grow meanwhile
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_big(what, len(data))
        return data
    except FileNotFoundError:
        raise ImageError(f"{what}: no such file {_shown(p)}") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ImageError(f"{what}: no such file {_shown(p)}") from None
        raise ImageError(f"{what}: cannot read {_shown(p)} ({exc.strerror})") from None


def encode_image(value: Any, what: str = "--image") -> str:
    """One image as base64 text. ``what`` names it in errors ("--image cat")."""
    if value is None or (isinstance(value, float) and value != value):
        # A --map row whose image cell is empty: that row fails, saying why.
        where = "this row has no image" if "{" in what else "there is no image"
        raise ImageError(f"{what}: {where} ({value})")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and (decoded := _base64_text(value)) is not None:
        data = decoded
    elif isinstance(value, str) and re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        raise ImageError(
            f"{what}: {value[:80]!r} is a URL; images are sent as data,"
            " and the kernel fetches nothing",
            hint="download it first (e.g. urllib.request.urlretrieve) and pass the file",
        )
    elif isinstance(value, (str, os.PathLike)):
        data = _read(value, what)
        if data and not _is_image(data):
            shown = _shown(Path(value).expanduser())
            raise ImageError(f"{what}: {shown} is not an image ({_FORMATS})")
    else:
        try:
            png = _png_of(value, what)
        except Exception as exc:  # a closed PIL image, a figure whose text does not render
            problem = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            raise ImageError(f"{what}: cannot be saved as PNG ({problem})") from None
        if png is None:
            raise ImageError(
                f"{what} is a {type(value).__name__}; use a file path, bytes, a PIL image"
                " or a matplotlib figure"
            )
        data = png
    if not data:
        raise ImageError(f"{what} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise _too_big(what, len(data))
    if not _is_image(data):
        raise ImageError(f"{what} is not an image ({_FORMATS})")
    return base64.b64encode(data).decode("ascii")


def image_column(spec: str) -> str | None:
    """The column a ``--image {column}`` names, or None for a plain ``--image X``."""
    m = _COLUMN.match(spec.strip())
    return m.group(1) if m else None


def resolve_images(specs: list[str], ns: Mapping[str, Any]) -> list[str]:
    """Every plain ``--image`` of a call, encoded (``{column}`` ones are per row: --map)."""
    out: list[str] = []
    for spec in specs:
        if image_column(spec) is not None:
            raise ImageError(f"--image {spec} takes each row's image; use it with --map")
        if spec.isidentifier() and spec in ns:
            out.append(encode_image(ns[spec], f"--image {spec}"))
        elif spec.isidentifier() and not Path(spec).exists():
            raise ImageError(f"--image {spec}: no variable or file named {spec!r}")
        else:
            out.append(encode_image(spec, f"--image {spec}"))
    return out
