"""What of a sandbox reply may reach the page and the kernel, without a container: the MIME
filter, the value decoder's checks, the reply parser."""

from __future__ import annotations

import base64
import io
import json
import time

import pyarrow as pa
import pyarrow.ipc
import pytest

from gleitzeit_jupyter.providers.sandbox.codec import CodecError, decode_value
from gleitzeit_jupyter.providers.sandbox.outputs import OutputLimits, safe_outputs
from gleitzeit_jupyter.providers.sandbox.results import ResultLimits, check_names, shape_result

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def one(data: dict, limits: OutputLimits | None = None) -> dict:
    out = safe_outputs([{"type": "display_data", "data": data}], limits)
    return out[0]["data"] if out else {}


def test_active_mime_types_never_pass() -> None:
    data = one(
        {
            "text/plain": "x",
            "application/javascript": "alert(1)",
            "application/vnd.jupyter.widget-view+json": {"model_id": "m"},
            "text/latex": "$\\href{javascript:alert(1)}{x}$",
            "application/json": {"a": [1]},
        }
    )
    assert data == {"text/plain": "x", "application/json": {"a": [1]}}


def test_html_keeps_tables_and_loses_scripts_handlers_frames_forms_styles() -> None:
    html = (
        "<style>td{}</style><table class='dataframe' border='1'><tr><th>a</th>"
        "<td onclick='x()'>1</td></tr></table><script>alert(1)</script>"
        "<img src=x onerror=alert(1)><iframe src=x></iframe><form><input></form>"
        "<a href='javascript:alert(1)'>j</a><a href='https://example.org'>ok</a>"
    )
    clean = one({"text/html": html})["text/html"]
    assert "<table>" in clean and "<th>a</th>" in clean and "<td>1</td>" in clean
    for bad in ("<style", "onclick", "<script", "<img", "onerror", "<iframe", "<form",
                "<input", "javascript:"):  # fmt: skip
        assert bad not in clean, bad
    assert 'href="https://example.org"' in clean


def test_markdown_is_rendered_with_raw_html_escaped_and_unsafe_links_dropped() -> None:
    md = "# Title\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1)) ![i](http://e/i.png)"
    data = one({"text/markdown": md, "text/plain": "t"})
    assert "text/markdown" not in data
    html = data["text/html"]
    assert "<h1>Title</h1>" in html
    assert "<img" not in html and "href" not in html and "<a" not in html
    assert "&lt;img" in html  # shown as text


def test_svg_keeps_shapes_and_loses_scripts_handlers_and_remote_references() -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4" onload="alert(1)">'
        "<script>alert(1)</script><rect width='2' height='2' fill='url(#g)'/>"
        "<rect fill='url(http://e/x.svg#a)'/><foreignObject><iframe/></foreignObject>"
        "<a href='javascript:alert(1)'><text>t</text></a></svg>"
    )
    clean = one({"image/svg+xml": svg})["image/svg+xml"]
    assert 'viewBox="0 0 4 4"' in clean and 'fill="url(#g)"' in clean
    for bad in ("onload", "<script", "http://e", "foreignObject", "<iframe", "javascript:"):
        assert bad not in clean, bad


@pytest.mark.parametrize(
    "value",
    [
        r"\75rl(http://e/x.svg#a)",  # a CSS escape spells url( without the letters
        r"\000055 rl(http://e/x.svg#a)",
        "image-set('http://e/x.png' 1x)",  # fetches a string URL, no url( at all
        "linear-gradient(red, blue), url('http://e/m.svg#m')",
    ],
)
def test_svg_presentation_attributes_cannot_reach_a_remote_url(value: str) -> None:
    # Chromium fetches each of these from a mask/fill attribute: a way to send what the run
    # computed past the sandbox's missing network, through the user's browser.
    svg = f'<svg><rect mask="{value}" fill="{value}" clip-path="{value}"/></svg>'
    clean = one({"image/svg+xml": svg})["image/svg+xml"]
    assert "http://e" not in clean


def test_svg_keeps_local_references_colours_and_transforms() -> None:
    svg = (
        '<svg><g transform="translate(1,2) scale(2) rotate(45)">'
        '<rect fill="url(#g)" stroke="rgb(1, 2, 3)" mask="url( #m )"/></g></svg>'
    )
    clean = one({"image/svg+xml": svg})["image/svg+xml"]
    for kept in ('transform="translate(1,2) scale(2) rotate(45)"', 'fill="url(#g)"',
                 'stroke="rgb(1, 2, 3)"', 'mask="url( #m )"'):  # fmt: skip
        assert kept in clean, kept


def test_images_pass_only_when_their_bytes_are_that_image() -> None:
    assert one({"image/png": PNG})["image/png"] == PNG
    assert one({"image/png": base64.b64encode(b"<svg onload=alert(1)>").decode()}) == {}
    assert one({"image/jpeg": PNG}) == {}  # a PNG is not a JPEG
    assert one({"image/png": "!!not base64!!"}) == {}


def test_entries_and_outputs_over_their_caps_are_replaced_by_a_note() -> None:
    data = one({"text/plain": "p", "text/html": "x" * 200}, OutputLimits(max_mime_bytes=100))
    assert "text/html" not in data and "max_mime_bytes" in data["text/plain"]
    many = safe_outputs(
        [{"data": {"text/plain": str(i)}} for i in range(50)], OutputLimits(max_outputs=10)
    )
    assert len(many) == 11 and "max_outputs" in many[-1]["data"]["text/plain"]


def test_arrow_with_corrupt_offsets_is_refused_not_crashed_on() -> None:
    # A string column whose offsets, patched in the stream, point far past its data: pandas
    # would read wild memory (this crashed the kernel before the data was validated).
    sink = io.BytesIO()
    table = pa.table({"s": ["abc", "def"]})
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    good = b"".join(i.to_bytes(4, "little") for i in (0, 3, 6))
    evil = b"".join(i.to_bytes(4, "little") for i in (0, 3, 1 << 30))
    stream = sink.getvalue()
    assert stream.count(good) == 1
    patched = stream.replace(good, evil)
    enc = {"t": "dataframe", "fmt": "arrow", "b64": base64.b64encode(patched).decode()}
    with pytest.raises(CodecError, match="invalid Arrow"):
        decode_value(enc)
    with pytest.raises(CodecError, match="not asked for"):
        decode_value(enc, arrow=False)


_HALF = 2 * 10**6
_HALF_VALID = pa.py_buffer(b"\x55" * (4 * 10**6 // 8))  # every other row valid


def _arrow(table: pa.Table) -> dict:
    sink = io.BytesIO()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {"t": "dataframe", "fmt": "arrow", "b64": base64.b64encode(sink.getvalue()).decode()}


@pytest.mark.parametrize(
    "column",
    [
        pa.nulls(10**8),  # no buffers at all: a few hundred bytes for 10**8 rows of None
        pa.ListArray.from_arrays(pa.array([0, 10**8], pa.int32()), pa.nulls(10**8)),
        pa.FixedSizeListArray.from_arrays(pa.nulls(10**8), 10**8),
        pa.array(["x" * 1000] * 3, pa.string_view()),  # views may all point at one string
        pa.RunEndEncodedArray.from_arrays(pa.array([10**8], pa.int32()), pa.array([1])),
        # A validity bit per row, and pandas makes a dict or an array object of each.
        pa.StructArray.from_buffers(pa.struct([]), 4 * 10**6, [_HALF_VALID], null_count=_HALF),
        pa.FixedSizeListArray.from_buffers(
            pa.list_(pa.int8(), 0),
            4 * 10**6,
            [_HALF_VALID],
            null_count=_HALF,
            children=[pa.array([], pa.int8())],
        ),
        # Four bytes of offset per row, an empty array object per row.
        pa.ListArray.from_arrays(
            pa.array(bytes(4 * (4 * 10**6 + 1)), pa.int32()), pa.array([], pa.int8())
        ),
    ],
    ids=[
        "null",
        "list-of-null",
        "fixed-size-list-of-null",
        "string-view",
        "run-end-encoded",
        "struct-without-fields",
        "fixed-size-list-of-nothing",
        "empty-lists",
    ],
)
def test_arrow_that_would_expand_in_the_kernel_is_refused(column: pa.Array) -> None:
    # Valid Arrow whose pandas form is far larger than the payload: to_pandas would build
    # hundreds of MB (or GB) in the kernel from a few hundred bytes.
    with pytest.raises(CodecError):
        decode_value(_arrow(pa.table({"a": column})))


def test_arrow_of_ordinary_dataframes_still_decodes() -> None:
    import pandas as pd

    df = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [1.5, None, 2.5],
            "b": [True, False, True],
            "s": ["x", None, "z"],
            "n": [None, None, None],
            "c": pd.Categorical(["a", "b", "a"]),
            "l": [[1, 2], [], [3]],
            "t": pd.to_datetime(["2020-01-01", "2021-01-01", "2022-01-01"]),
        }
    )
    back = decode_value(_arrow(pa.Table.from_pandas(df)))
    assert back.shape == df.shape
    assert back["s"][0] == "x" and back["s"].isna()[1] and list(back["l"][0]) == [1, 2]


@pytest.mark.parametrize(
    "enc",
    [
        {"t": "json", "v": {"a": object()}},
        {"t": "ndarray", "dtype": "|O", "shape": [1], "b64": ""},
        {"t": "ndarray", "dtype": "<i8", "shape": ["1"], "b64": ""},
        {"t": "ndarray", "dtype": "[('a', '<i4')]", "shape": [1], "b64": "AAAAAA=="},
        {"t": "bytes", "b64": 7},
        {"t": "dataframe", "fmt": "split", "data": 7},
        {"t": "pickle", "b64": ""},
    ],
)
def test_malformed_values_are_codec_errors(enc: dict) -> None:
    with pytest.raises(CodecError):
        decode_value(enc)


@pytest.mark.parametrize("dtype", ["S200000000", "V200000000", "U50000000", "Sparse[S9999999]"])
def test_a_dataframe_dtype_cannot_blow_up_in_the_kernel(dtype: str) -> None:
    # A few bytes of JSON whose dtype map asks for 200 MB per cell: astype would allocate
    # that in the kernel for every row. Only dtypes of bounded size are applied.
    data = '{"columns":["a"],"index":[0,1,2],"data":[["x"],["y"],["z"]]}'
    df = decode_value({"t": "dataframe", "fmt": "split", "data": data, "dtypes": {"a": dtype}})
    assert df.memory_usage(deep=True).sum() < 1 << 20
    assert list(df["a"]) == ["x", "y", "z"]


def test_a_dataframe_keeps_its_ordinary_dtypes() -> None:
    import pandas as pd

    from gleitzeit_jupyter.providers.sandbox.codec import encode_value

    df = pd.DataFrame(
        {
            "i": [1, 2],
            "u": pd.array([1, 2], dtype="uint8"),
            "f": [1.5, 2.5],
            "b": [True, False],
            "n": pd.array([1, None], dtype="Int64"),
            "t": pd.to_datetime(["2020-01-01", "2021-01-01"]),
            "z": pd.to_datetime(["2020-01-01", "2021-01-01"]).tz_localize("UTC"),
            "s": ["x", "y"],
        }
    )
    back = decode_value(encode_value(df))
    for col in ("t", "z"):  # the resolution may differ
        assert str(back[col].dtype).startswith("datetime64"), col
    assert dict(back.dtypes.astype(str).drop(["t", "z"])) == dict(
        df.dtypes.astype(str).drop(["t", "z"])
    )


def test_names_must_be_identifiers_and_not_dunder() -> None:
    assert check_names("a, b,a") == ["a", "b"]
    for bad in (["__builtins__"], ["__x__"], ["a b"], ["lambda"], [1], "x,__name__"):
        with pytest.raises(ValueError):
            check_names(bad)


def test_a_reply_cannot_claim_a_timeout_or_values_not_asked_for() -> None:
    raw = {
        "exit_code": 0,
        "timed_out": True,
        "values": {"x": {"t": "json", "v": 1}, "__builtins__": {"t": "json", "v": 2}},
        "error": None,
    }
    r = shape_result(raw, timeout=1, started=time.perf_counter(), requested=["x"])
    assert r["timed_out"] is False and r["values"] == {"x": 1}
    big = {"values": {"x": {"t": "json", "v": "y" * 1000}}}
    r = shape_result(
        big, timeout=1, started=0, requested=["x"], limits=ResultLimits(max_value_bytes=100)
    )
    assert r["values"] == {} and r["error"]["ename"] == "ValueTooLarge"


def test_lone_surrogates_from_the_sandbox_cannot_break_what_the_kernel_sends() -> None:
    # A lone surrogate is a valid Python string but not UTF-8: Jupyter cannot send it, so a
    # repr or an exception message holding one lost the output, or the whole error silently.
    raw = {
        "exit_code": 1,
        "error": {"ename": "Value\ud800Error", "evalue": "a\ud800b", "traceback": "t\udcffb"},
        "outputs": [
            {
                "type": "display_data",
                "data": {
                    "text/plain": "x\ud800y",
                    "text/html": "<b>\ud800</b>",
                    "image/svg+xml": "<svg><text>\ud800</text></svg>",
                    "text/markdown": "*\ud800*",
                    "application/json": {"k\ud800": ["\udfff"]},
                },
            }
        ],
    }
    r = shape_result(raw, timeout=1, started=0)
    json.dumps(r, ensure_ascii=False).encode("utf-8")  # what Jupyter does with it
    assert r["error"]["evalue"] == "a\\ud800b"
    assert r["outputs"][0]["data"]["text/plain"] == "x\\ud800y"
    assert "text/html" in r["outputs"][0]["data"]
