"""Framing, the docker stream demultiplexer, the value codec and the apt mirror lookup: the
pure parts, tested without an engine (the rest of this folder uses a real one)."""

from __future__ import annotations

import base64
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gleitzeit_jupyter.providers.sandbox.codec import CodecError, decode_value, encode_value
from gleitzeit_jupyter.providers.sandbox.image import apt_mirror
from gleitzeit_jupyter.providers.sandbox.protocol import (
    DockerDemux,
    FrameDecoder,
    ProtocolError,
    encode_frame,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=3), max_size=5),
    st.integers(min_value=1, max_value=7),
)
def test_frames_survive_any_chunking(messages: list[dict], step: int) -> None:
    wire = b"".join(encode_frame(m) for m in messages)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(wire), step):
        out += decoder.feed(wire[i : i + step])
    assert out == messages


def test_frame_decoder_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", 2**31) + b"x")
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", 3) + b"{x}")
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", 2) + b"[]")


def test_docker_demux_splits_streams_across_chunk_boundaries() -> None:
    def chunk(stream: int, data: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(data)) + data

    wire = chunk(1, b"hello ") + chunk(2, b"oops") + chunk(1, b"world")
    demux = DockerDemux()
    got: list[tuple[int, bytes]] = []
    for i in range(len(wire)):
        got += demux.feed(wire[i : i + 1])
    assert got == [(1, b"hello "), (2, b"oops"), (1, b"world")]
    with pytest.raises(ProtocolError):
        DockerDemux().feed(b"hello world, no header")


@given(json_values)
def test_json_values_round_trip(value: object) -> None:
    enc = json.loads(json.dumps(encode_value(value)))
    assert decode_value(enc) == value


@pytest.mark.parametrize("arrow", [False, True])
def test_dataframes_and_arrays_round_trip(arrow: bool) -> None:
    df = pd.DataFrame(
        {
            "i": [1, 2],
            "f": [0.5, None],
            "s": ["a", "b"],
            "t": pd.to_datetime(["2024-01-01", "2024-06-01"]),
        }
    )
    enc = json.loads(json.dumps(encode_value(df, arrow=arrow)))
    assert enc["fmt"] == ("arrow" if arrow else "split")
    back = decode_value(enc)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    arr = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(decode_value(encode_value(arr)), arr)
    assert decode_value(encode_value(np.int64(7))) == 7


def test_unsafe_values_are_refused_on_both_ends() -> None:
    class Thing:
        pass

    with pytest.raises(CodecError, match="Thing"):
        encode_value(Thing(), name="thing")
    with pytest.raises(CodecError, match="object"):
        encode_value(np.array([Thing()], dtype=object))
    with pytest.raises(CodecError, match="non-JSON"):
        encode_value(pd.DataFrame({"x": [Thing()]}))
    payload = base64.b64encode(pickle.dumps([1, 2])).decode()
    for forged in (
        {"t": "pickle", "b64": payload},
        {"t": "ndarray", "dtype": "|O", "shape": [1], "b64": payload},
        {"t": "dataframe", "fmt": "pickle", "b64": payload},
        {"v": 1},
        ["t", "json"],
    ):
        with pytest.raises(CodecError):
            decode_value(forged)


def test_apt_mirror_is_read_from_deb822_and_list_files(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\n"
        "Suites: trixie trixie-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: trixie-security\nComponents: main\n"
    )
    m = apt_mirror(str(tmp_path))
    assert (m.uri, m.suite) == ("http://mirror.example/debian", "trixie")
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n"
    )
    m = apt_mirror(str(tmp_path))
    assert (m.uri, m.suite) == ("http://other.example/debian", "bookworm")
    (tmp_path / "sources.list").unlink()
    with pytest.raises(RuntimeError, match="--mirror"):
        apt_mirror(str(tmp_path))
