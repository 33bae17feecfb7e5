"""The stand-in's model side: names, deterministic text and vectors, fault knobs."""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Faults",
    "RecordedRequest",
    "details",
    "digest",
    "embedding_vector",
    "generate_tokens",
    "normalize_model",
    "now_iso",
    "off_schema_json",
    "shaped_json",
]

WORDS = (
    "the sky is blue because light scatters off small molecules in air and the short "
    "wavelengths spread most so we see blue during day while sunsets look red since light "
    "travels farther through air a model answers every prompt with calm plain words here"
).split()


def normalize_model(name: str) -> str:
    """``llama3.2`` and ``llama3.2:latest`` name the same model (tag defaults to latest)."""
    name = name.strip()
    tail = name.rsplit("/", 1)[-1]
    return name if ":" in tail else f"{name}:latest"


def now_iso(offset_s: float = 0.0) -> str:
    t = datetime.now(UTC) + timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def details(name: str) -> dict[str, Any]:
    family = name.split(":")[0].rstrip("0123456789.") or "llama"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


@dataclass
class Faults:
    """Fault injection knobs. Probabilities apply to inference endpoints only (generate, chat,
    embed): a busy Ollama still answers ``/api/version`` and ``/api/tags``."""

    error_rate: float = 0.0  # answer error_status (5xx) with this probability
    error_status: int = 500
    busy_rate: float = 0.0  # answer 503 "server busy" with this probability
    reset_rate: float = 0.0  # drop the connection with a TCP RST before answering
    hang: bool = False  # accept inference calls and never answer while set
    stream_error_after: int | None = None  # emit an {"error"} line after N tokens
    # A ``format`` schema is not kept (as by a server without grammar support, or a model
    # cut short): with this probability, or always when the prompt contains the marker.
    off_schema_rate: float = 0.0
    off_schema_marker: str | None = None

    def off_schema(self, prompt: str, rng: random.Random | None = None) -> bool:
        if self.off_schema_marker and self.off_schema_marker in prompt:
            return True
        return self.off_schema_rate > 0 and (rng or random).random() < self.off_schema_rate

    def update(self, **knobs: Any) -> None:
        for key, value in knobs.items():
            if not hasattr(self, key):
                raise AttributeError(f"unknown fault knob {key!r}")
            setattr(self, key, value)


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    at: float = field(default_factory=time.monotonic)


def generate_tokens(
    model: str, text: str, options: dict[str, Any], default_tokens: int
) -> tuple[list[str], str]:
    seed = options.get("seed", 0)
    h = hashlib.blake2b(f"{model}\0{seed}\0{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(h, "big"))
    limit = options.get("num_predict")
    n = default_tokens if limit is None or limit < 0 else min(int(limit), 4096)
    words = [rng.choice(WORDS) for _ in range(n)]
    toks = [w if i == 0 else " " + w for i, w in enumerate(words)]
    reason = "length" if limit is not None and limit >= 0 else "stop"
    stops = options.get("stop") or []
    if isinstance(stops, str):
        stops = [stops]
    if not stops:
        return toks, reason
    out: list[str] = []
    acc = ""
    for tok in toks:
        cut = min((i for s in stops if (i := (acc + tok).find(s)) >= 0), default=-1)
        if cut >= 0:
            if cut > len(acc):
                out.append((acc + tok)[len(acc) : cut])
            return out, "stop"
        out.append(tok)
        acc += tok
    return out, reason


def embedding_vector(model: str, text: str, dim: int) -> list[float]:
    h = hashlib.blake2b(f"{model}\0{text}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(h, "big"))
    v = [rng.uniform(-1, 1) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def default_capabilities(name: str) -> list[str]:
    """What ``/api/show`` reports when a stand-in is not told: an embedding model by its
    name, else a general model that completes, calls tools and embeds (narrow it with the
    stand-in's ``capabilities``)."""
    if "embed" in name:
        return ["embedding"]
    return ["completion", "tools", "embedding"]


def _resolve(schema: Any, root: Any) -> Any:
    """Follow a local ``$ref`` (``#/$defs/Name``, as Pydantic writes nested models)."""
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 16:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node.get(part) if isinstance(node, dict) and part else node
        schema = node if isinstance(node, dict) else {}
        seen += 1
    return schema


def _clamp(value: float, schema: dict[str, Any]) -> float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(low, (int, float)) and value <= low:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, (int, float)) and value >= high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return value


_DEEP = 4


def shaped_json(schema: Any, words: list[str], depth: int = 0, root: Any = None) -> Any:
    """A value matching a JSON schema's ``type``/``properties``/``items``/``enum``/``const``,
    ``anyOf``/``oneOf``/``allOf``, local ``$ref`` and numeric bounds (what Ollama's
    grammar-constrained ``format`` guarantees), filled with generated words."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > 8:
        return " ".join(words).strip()
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [_resolve(o, root) for o in schema.get(key) or []]
        options = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return shaped_json(options[0], words, depth + 1, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    # A grammar-constrained model always ends a recursive schema: deep down it writes only
    # what is required, and arrays as short as allowed.
    deep = depth >= _DEEP
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        need = set(schema.get("required") or props) if deep else set(props)
        return {k: shaped_json(v, words, depth + 1, root) for k, v in props.items() if k in need}
    if kind == "array":
        least = int(schema.get("minItems") or 0)
        count = least if deep else max(1, least)
        return [shaped_json(schema.get("items") or {}, words, depth + 1, root)] * count
    if kind == "integer":
        return int(_clamp(len(words), schema))
    if kind == "number":
        return _clamp(len(words) / 2, schema)
    if kind == "boolean":
        return len(words) % 2 == 0
    if kind == "null":
        return None
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    return " ".join(words).strip()


# The string formats a JSON-schema grammar constrains (llama.cpp's json-schema-to-grammar,
# which Ollama's format follows); other formats are free text there too.
_FORMATS = {
    "date": "2025-01-31",
    "time": "12:30:00Z",
    "date-time": "2025-01-31T12:30:00Z",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


def off_schema_json(schema: Any) -> Any:
    """JSON that breaks a schema the way an unconstrained model does: every field present,
    each with the wrong type (a word where a number belongs, a number where text does)."""
    schema = _resolve(schema, schema)
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return {"unexpected": ["not", "what", "was", "asked"]}
    out: dict[str, Any] = {}
    for name, prop in props.items():
        prop = _resolve(prop, schema)
        kind = prop.get("type") if isinstance(prop, dict) else None
        out[name] = "several" if kind in ("integer", "number", "boolean") else 42
    return out
