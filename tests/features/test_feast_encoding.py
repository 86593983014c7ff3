"""Our Feast layout code against Feast's own functions (run in .venv-feast), byte for byte."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from loadtests.feast_env import feast_python_or_skip, run_python_json
from switchyard.server.features.feast_encoding import (
    ValueType,
    decode_float_values,
    decode_timestamp_s,
    decode_value,
    entity_key_encoder,
    field_name,
    murmur3_32,
    timestamp_field,
    whole_seconds,
)

HASH_INPUTS = ["", "a", "ab", "abc", "abcd", "abcde", "user_stats:activity", "ünïcode:ß", "x" * 37]
STRING_IDS = ["u0", "i499", "", "ünï"]
INT_IDS = [0, 1, -1, 2**40, -(2**63)]
INT32_IDS = [0, 7, -1, 2**31 - 1, -(2**31)]
VALUES: list[tuple[str, Any]] = [
    ("float_val", 1.5),
    ("float_val", -0.0),
    ("float_val", 3.4028234663852886e38),
    ("double_val", 2.0000001),
    ("int32_val", -7),
    ("int32_val", 2**31 - 1),
    ("int64_val", -(2**40)),
    ("int64_val", 2**62),
    ("bool_val", True),
    ("bool_val", False),
]

_FEAST_SIDE = """
import mmh3
from google.protobuf.timestamp_pb2 import Timestamp
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
hashes = [mmh3.hash(s.encode(), signed=False) for s in {hash_inputs!r}]
fields = [_mmh3(s).hex() for s in {hash_inputs!r}]
def key(join_key, value):
    return _redis_key("proj", EntityKey(join_keys=[join_key], entity_values=[value]), 3).hex()
keys = [key("user_id", Value(string_val=i)) for i in {string_ids!r}]
int_keys = [key("n", Value(int64_val=i)) for i in {int_ids!r}]
int32_keys = [key("n", Value(int32_val=i)) for i in {int32_ids!r}]
values = [Value(**{{kind: value}}).SerializeToString().hex() for kind, value in {values!r}]
empty = Value().SerializeToString().hex()
string_value = Value(string_val="x").SerializeToString().hex()
ts = Timestamp(seconds=1764600000, nanos=250000000).SerializeToString().hex()
print(json.dumps(dict(hashes=hashes, fields=fields, keys=keys, int_keys=int_keys,
                      int32_keys=int32_keys, values=values, empty=empty,
                      string_value=string_value, ts=ts)))
"""


@pytest.fixture(scope="module")
def feast_side() -> dict[str, Any]:
    feast_python_or_skip()
    code = _FEAST_SIDE.format(
        hash_inputs=HASH_INPUTS,
        string_ids=STRING_IDS,
        int_ids=INT_IDS,
        int32_ids=INT32_IDS,
        values=VALUES,
    )
    result: dict[str, Any] = run_python_json(code)
    return result


def test_murmur3_matches_mmh3(feast_side: dict[str, Any]) -> None:
    assert [murmur3_32(s.encode()) for s in HASH_INPUTS] == feast_side["hashes"]


def test_field_names_match_feasts(feast_side: dict[str, Any]) -> None:
    ours = [field_name(*s.split(":", 1)).hex() if ":" in s else None for s in HASH_INPUTS]
    for mine, theirs in zip(ours, feast_side["fields"], strict=True):
        if mine is not None:
            assert mine == theirs
    assert timestamp_field("user_stats") == b"_ts:user_stats"


def test_redis_keys_match_feasts(feast_side: dict[str, Any]) -> None:
    string_key = entity_key_encoder("user_id", ValueType.STRING, "proj")
    assert [string_key(i).hex() for i in STRING_IDS] == feast_side["keys"]
    int64_key = entity_key_encoder("n", ValueType.INT64, "proj")
    assert [int64_key(str(i)).hex() for i in INT_IDS] == feast_side["int_keys"]
    int32_key = entity_key_encoder("n", ValueType.INT32, "proj")
    assert [int32_key(str(i)).hex() for i in INT32_IDS] == feast_side["int32_keys"]


def test_values_decode_as_feast_wrote_them(feast_side: dict[str, Any]) -> None:
    decoded = [decode_value(bytes.fromhex(raw)) for raw in feast_side["values"]]
    expected = [
        float(struct.unpack("<f", struct.pack("<f", v))[0]) if kind == "float_val" else float(v)
        for kind, v in VALUES
    ]
    assert decoded == expected
    assert decode_value(bytes.fromhex(feast_side["empty"])) is None
    with pytest.raises(ValueError, match="string_val is not a number"):
        decode_value(bytes.fromhex(feast_side["string_value"]))
    assert decode_timestamp_s(bytes.fromhex(feast_side["ts"])) == pytest.approx(1764600000.25)


def test_float_values_decode_in_one_pass() -> None:
    cells = [b"\x35" + struct.pack("<f", v) for v in (1.0, -2.5, 3.25)]
    decoded = decode_float_values(cells, 3)
    assert decoded is not None and decoded.tolist() == [1.0, -2.5, 3.25]
    # An absent cell, or another encoding, leaves it to the per-value decoder.
    assert decode_float_values([*cells, None], 4) is None
    assert decode_float_values([*cells[:2], b"\x29" + struct.pack("<d", 1.0)], 3) is None


def test_whole_seconds_of_timestamps_in_one_pass() -> None:
    stamps = [
        Timestamp(seconds=1764600000, nanos=250000000),
        Timestamp(seconds=1764600001),
        Timestamp(seconds=2**35 - 1),  # the last second of the usual 5-byte shape
    ]
    cells: list[bytes | None] = [stamp.SerializeToString() for stamp in stamps]
    cells += [None, Timestamp(seconds=5).SerializeToString(), b"\x08\x80", b"\x08\x80\x80\x80\x80"]
    seconds = whole_seconds(cells)
    assert seconds[:3].tolist() == [1764600000.0, 1764600001.0, float(2**35 - 1)]
    assert np.isnan(seconds[3:]).all()  # absent, 1-byte seconds, truncated: one by one


@pytest.mark.parametrize("entity_id", ["u0", "1_000", " 12", "+5", "\u0663", "1.0", ""])
def test_integer_join_keys_take_only_ascii_decimal_ids(entity_id: str) -> None:
    with pytest.raises(ValueError, match="not a decimal integer"):
        entity_key_encoder("n", ValueType.INT64, "proj")(entity_id)


def test_an_integer_id_out_of_the_key_types_range_raises() -> None:
    with pytest.raises(struct.error):
        entity_key_encoder("n", ValueType.INT32, "proj")(str(2**31))


def test_wrong_ids_and_bad_values_raise() -> None:
    with pytest.raises(ValueError):
        decode_value(b"\x35\x00")  # a truncated float goes to protobuf, which refuses it
    assert decode_timestamp_s(None) is None


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1, 0), (300, 5), (1764600000, 0), (1764600000, 999999999), (2**40, 1), (-5, 0)],
)
def test_timestamps_decode_as_google_encodes_them(seconds: int, nanos: int) -> None:
    raw = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    assert decode_timestamp_s(raw) == pytest.approx(seconds + nanos * 1e-9, abs=1e-6)
