"""``%llm models`` as a table a person reads: one row per model, one plain value per cell.

Ollama's ``/api/tags`` gives sizes in bytes and the interesting facts (parameter count,
quantisation, family) inside a nested ``details`` dict; a DataFrame shows that dict as an
unreadable blob, so its fields become columns of their own. ``pool`` says which pool serves
the model (``ollama`` or ``openai``); a model in both has a row for each.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "models_table"]

COLUMNS = [
    "pool",
    "parameters",
    "quantization",
    "family",
    "capabilities",
    "size_gb",
    "instances",
    "loaded_on",
]

_GB = 1e9  # Ollama's own listing uses decimal gigabytes


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
    size = entry.get("size")
    caps = entry.get("capabilities")
    return {
        "name": str(entry.get("name", "?")),
        "pool": entry.get("pool") or "ollama",
        "parameters": details.get("parameter_size") or None,
        "quantization": details.get("quantization_level") or None,
        "family": details.get("family") or None,
        # Joined words, not a list: "completion, vision" reads at a glance.
        "capabilities": ", ".join(sorted(map(str, caps))) if caps else None,
        "size_gb": round(size / _GB, 2) if isinstance(size, (int, float)) else None,
        "instances": list(entry.get("instances") or []),
        "loaded_on": list(entry.get("loaded_on") or []),
    }


def models_table(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per model, indexed by name; columns as in :data:`COLUMNS`."""
    frame = pd.DataFrame([_row(e) for e in entries], columns=["name", *COLUMNS])
    if frame["capabilities"].isna().all():
        # The pool did not report capabilities: an all-empty column only adds noise.
        frame = frame.drop(columns="capabilities")
    for col in ("parameters", "quantization", "family", "size_gb"):
        if frame[col].isna().all() and (frame["pool"] != "ollama").all():
            # An OpenAI-compatible server reports none of these: empty columns are noise.
            frame = frame.drop(columns=col)
    return frame.sort_values(["name", "pool"]).set_index("name")
