"""The --map summary line: rows, failures by label, token totals and aggregate speed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gleitzeit_jupyter.hub.errors import ResourceFailed
from gleitzeit_jupyter.kernel.batch import BatchOutcome


def outcome(values: list, index: pd.Index, **kw) -> BatchOutcome:
    series = pd.Series(values, index=index, dtype=object)
    failed = sum(isinstance(v, BaseException) for v in values)
    return BatchOutcome(series=series, ok=len(values) - failed, failed=failed, **kw)


def test_failed_rows_are_listed_by_label_then_counted() -> None:
    index = pd.Index(np.arange(100, 114))
    values = ["ok", "ok"] + [ResourceFailed(f"down {i}") for i in range(12)]
    text = outcome(values, index, elapsed_s=2.0, first_failure=(102, values[2])).summary()
    labels = ", ".join(str(i) for i in range(102, 112))
    assert f"; failed rows: {labels} and 2 more; first failure at row 102: " in text
    assert "np.int64" not in text


def test_tokens_and_aggregate_speed() -> None:
    text = outcome(
        ["a"] * 3,
        pd.RangeIndex(3),
        elapsed_s=4.0,
        instances={"gpu-1": 2, "gpu-2": 1},
        prompt_tokens=1200,
        completion_tokens=6000,
    ).summary()
    assert text == (
        "--map: 3 rows, 3 ok, 0 failed in 4.0 s (gpu-1: 2, gpu-2: 1);"
        " 1,200 → 6,000 tokens, 1,500.0 tok/s"
    )


def test_no_token_counts_no_token_part() -> None:
    text = outcome(["a"], pd.RangeIndex(1), elapsed_s=1.0).summary()
    assert text == "--map: 1 rows, 1 ok, 0 failed in 1.0 s"
