"""Messages with attachments (values' bytes in data chunks after their JSON frame) and the
values encoded into them: the pure parts, no engine. A stream is hostile input here: forged
chunk headers, lengths, truncation and oversize must be refused, never buffered without bound.
"""

from __future__ import annotations

import decimal
import struct
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gleitzeit_jupyter.providers.sandbox.codec import CodecError, decode_value, encode_value
from gleitzeit_jupyter.providers.sandbox.protocol import (
    CHUNK,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    encode_message,
)

DATA = 0x80000000


def wire(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


def header(message: dict) -> bytes:
    return encode_frame(message)


def chunk(data: bytes, size: int | None = None) -> bytes:
    return struct.pack(">I", DATA | (len(data) if size is None else size)) + data


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.binary(max_size=3000), max_size=4),
    st.integers(min_value=1, max_value=5000),
)
def test_attachments_survive_any_chunking(blobs: list[bytes], step: int) -> None:
    stream = wire(encode_message({"op": "x", "n": 1}, blobs)) + encode_frame({"op": "after"})
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), step):
        out += decoder.feed(stream[i : i + step])
    assert [m["op"] for m in out] == (["x", "after"])
    assert [bytes(a) for a in out[0].get("attachments", [])] == blobs


def test_a_large_attachment_is_cut_into_chunks_of_at_most_one_mib() -> None:
    blob = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    parts = encode_message({"op": "x"}, [blob])
    headers = [struct.unpack(">I", bytes(p))[0] for p in parts[1::2]]
    assert all(h & DATA and 0 < h & ~DATA <= CHUNK for h in headers)
    assert len(headers) == 4
    (message,) = FrameDecoder().feed(wire(parts))
    assert message["attachments"] == [bytearray(blob)]


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(chunk(b"abc"), id="data chunk outside an attachment"),
        pytest.param(header({"attachments": [4]}) + chunk(b"abcdef"), id="chunk past its size"),
        pytest.param(
            header({"attachments": [4]}) + chunk(b"", size=CHUNK + 1), id="chunk over 1 MiB"
        ),
        pytest.param(header({"attachments": [4]}) + chunk(b"", size=0), id="empty chunk"),
        pytest.param(
            header({"attachments": [4]}) + chunk(b"ab") + encode_frame({"op": "x"}),
            id="message inside an attachment",
        ),
        pytest.param(header({"attachments": [-1]}), id="negative size"),
        pytest.param(header({"attachments": "4"}), id="sizes not a list"),
        pytest.param(header({"attachments": [1.5]}), id="size not an int"),
        pytest.param(header({"attachments": [1] * 5000}), id="too many attachments"),
        pytest.param(header({"attachments": [600 << 20]}), id="over the frame limit"),
    ],
)
def test_forged_streams_are_refused(stream: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(stream)


def test_declared_sizes_reserve_no_memory_until_bytes_arrive() -> None:
    # A sender may declare up to the limit; only what it really sends is held.
    decoder = FrameDecoder(max_size=200 << 20)
    tracemalloc.start()
    try:
        assert decoder.feed(header({"attachments": [199 << 20]}) + chunk(b"x" * 10)) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_truncated_stream_delivers_nothing() -> None:
    full = wire(encode_message({"op": "x"}, [b"a" * 5000]))
    assert FrameDecoder().feed(full[:-1]) == []


def test_the_limit_counts_the_message_and_its_attachments() -> None:
    stream = wire(encode_message({"op": "x"}, [b"a" * 600, b"b" * 600]))
    with pytest.raises(ProtocolError):
        FrameDecoder(max_size=1000).feed(stream)
    assert FrameDecoder(max_size=2000).feed(stream)[0]["op"] == "x"


def roundtrip(value: object) -> object:
    attach: list = []
    enc = encode_value(value, arrow=True, attach=attach)
    (message,) = FrameDecoder().feed(wire(encode_message({"v": enc}, attach)))
    return decode_value(message["v"], attachments=message.get("attachments"))


def test_values_travel_as_attachments_not_base64() -> None:
    arr = np.arange(10, dtype="int16").reshape(2, 5)
    attach: list = []
    enc = encode_value(arr, attach=attach)
    assert "b64" not in enc and enc["a"] == 0 and len(attach) == 1
    np.testing.assert_array_equal(roundtrip(arr), arr)
    assert roundtrip(b"\x00\x01") == b"\x00\x01"


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "when": pd.date_range("2024-03-30", periods=3, freq="12h", tz="Europe/Berlin"),
            "cat": pd.Categorical(["b", "a", "b"], categories=["b", "a"], ordered=True),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "s": pd.array(["x", None, "z"], dtype="string"),
            "plain": ["x", "y", None],
            "money": [decimal.Decimal("1.10"), decimal.Decimal("2.5"), None],
            "f": [1.5, np.nan, -0.0],
            "t": pd.to_timedelta([1, 2, 3], unit="s"),
        },
        index=pd.Index(["r1", "r2", "r3"], name="key"),
    )


def test_arrow_keeps_every_dtype_it_can_carry() -> None:
    df = mixed_frame()
    back = roundtrip(df)
    pd.testing.assert_frame_equal(back, df)
    assert list(back.dtypes) == list(df.dtypes)
    pd.testing.assert_series_equal(roundtrip(df["when"]), df["when"])


@pytest.mark.parametrize(
    ("column", "dtype"),
    [
        (pd.period_range("2024", periods=3, freq="D"), "period[D]"),
        (pd.arrays.IntervalArray.from_breaks([0, 1, 2, 3]), "interval"),
        (np.array([1 + 1j, 2, 3]), "complex128"),
        ([1, "a", 2.5], "object"),
    ],
    ids=["period", "interval", "complex beside text", "mixed objects"],
)
def test_what_arrow_cannot_carry_is_an_error_naming_column_and_dtype(
    column: object, dtype: str
) -> None:
    df = pd.DataFrame({"ok": ["a", "b", "c"], "bad": column})
    with pytest.raises(CodecError) as info:
        encode_value(df, arrow=True, name="df", attach=[])
    assert "'bad'" in str(info.value) and dtype in str(info.value)


def test_too_wide_a_frame_is_refused_on_both_ends() -> None:
    wide = pd.DataFrame([["s"] * 50], columns=[f"c{i}" for i in range(50)])
    with pytest.raises(CodecError, match="max_columns"):
        encode_value(wide, arrow=True, attach=[], max_columns=20)
    attach: list = []
    enc = encode_value(wide, arrow=True, attach=attach)
    with pytest.raises(CodecError, match="max_columns"):
        decode_value(enc, attachments=attach, max_columns=20)


@pytest.mark.parametrize(
    "enc",
    [
        {"t": "ndarray", "dtype": "<i8", "shape": [3], "a": 0},
        {"t": "ndarray", "dtype": "<i8", "shape": [1], "a": 7},
        {"t": "ndarray", "dtype": "<i8", "shape": [1], "a": "0"},
        {"t": "dataframe", "fmt": "arrow", "a": 0},
    ],
    ids=["size differs from shape", "no such attachment", "index not an int", "not Arrow"],
)
def test_forged_references_to_attachments_are_refused(enc: dict) -> None:
    with pytest.raises(CodecError):
        decode_value(enc, attachments=[bytearray(b"\x00" * 12)])


@pytest.mark.parametrize(
    ("columns", "why"),
    [
        (["a", "a"], "duplicate column names"),
        ([0, "b"], "column names of mixed types"),
    ],
    ids=["duplicate names", "mixed int and str names"],
)
def test_column_names_arrow_cannot_keep_are_an_error_not_a_rename(columns: list, why: str) -> None:
    df = pd.DataFrame([["x", "y"]], columns=columns)
    with pytest.raises(CodecError, match=why) as info:
        encode_value(df, arrow=True, name="df", attach=[])
    assert "'df'" in str(info.value)


def arrow_with_pandas_metadata(numpy_type: str) -> bytes:
    import json

    import pyarrow as pa

    table = pa.Table.from_pandas(pd.DataFrame({"a": [1, 2, 3]}))
    meta = json.loads(table.schema.metadata[b"pandas"])
    meta["columns"][0]["numpy_type"] = numpy_type
    table = table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("numpy_type", ["period[D]", "interval[int64, right]", "Sparse[int64]"])
def test_pandas_metadata_cannot_turn_a_column_into_another_dtype(numpy_type: str) -> None:
    # The schema's pandas metadata is the sender's word: it may restore the dtypes a frame can
    # travel with, never construct one that could not have been written.
    enc = {"t": "dataframe", "fmt": "arrow", "a": 0}
    with pytest.raises(CodecError, match="'a'"):
        decode_value(enc, attachments=[arrow_with_pandas_metadata(numpy_type)])
    ok = decode_value(enc, attachments=[arrow_with_pandas_metadata("Int64")])
    assert str(ok["a"].dtype) == "Int64"


def test_the_encoder_refuses_what_the_decoder_would_refuse() -> None:
    # The message and its attachments together are held to the limit, as the receiving end
    # counts them: each within it but not their sum would cost the container its channel.
    from gleitzeit_jupyter.providers.sandbox.protocol import MAX_FRAME

    blob = bytes(MAX_FRAME // 2 + CHUNK)  # calloc'ed: untouched pages cost nothing
    message = {"op": "result", "text": "x" * (MAX_FRAME // 2)}
    with pytest.raises(ProtocolError, match="limit"):
        encode_message(message, [blob])
    assert len(encode_message({"op": "result"}, [blob])) > 1


def test_pyarrow_backed_columns_come_back_with_their_arrow_dtype() -> None:
    import pyarrow as pa

    df = pd.DataFrame(
        {
            "l": pd.array([[1, 2], [3]], dtype=pd.ArrowDtype(pa.list_(pa.int64()))),
            "st": pd.array(
                [{"x": 1}, {"x": 2}], dtype=pd.ArrowDtype(pa.struct([("x", pa.int64())]))
            ),
            "s": pd.array(["a", None], dtype=pd.ArrowDtype(pa.string())),
            "d": pd.array(
                [decimal.Decimal("1.10"), None], dtype=pd.ArrowDtype(pa.decimal128(10, 2))
            ),
            "plain": ["x", "y"],
        }
    )
    back = roundtrip(df)
    pd.testing.assert_frame_equal(back, df)
    assert list(back.dtypes) == list(df.dtypes)
