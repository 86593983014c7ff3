"""`switchyard features load`: feature files into the real Redis, and its errors."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from loadtests.gateway_process import free_port
from switchyard.runtimes.errors import InvalidArgument, Unavailable
from switchyard.server.features.cli import main as features_cli
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.files import FeatureFileError
from switchyard.server.features.loader import load_file
from switchyard.server.features.memory_store import MemoryFeatureStore
from switchyard.server.features.redis_store import RedisFeatureStore
from switchyard.server.features.store import FeatureBatch, FeatureStore
from tests.features.support import SHARED_REDIS_URL, features_section
from tests.features.test_redis_store import redis_config

USERS_CSV = """user_id,activity,tenure,premium
u1,0.1,3,true
u2,-2.5e-3,-7,0
u3,,12,
u4, 1e30 ,0,FALSE
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    def text(value: bytes | str) -> str:  # bytes, from a client without decode_responses
        return value.decode() if isinstance(value, bytes) else value

    return {text(k): text(v) for k, v in client.hgetall(key).items()}


def test_csv_round_trip_with_ttl(
    tmp_path: Path, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    user = definitions.entity("user")
    path = write(tmp_path / "users.csv", USERS_CSV)
    progress = io.StringIO()
    written = load_file(
        path, user, SHARED_REDIS_URL, ttl_s=60, batch_size_rows=3, progress=progress
    )
    assert written == 4
    assert progress.getvalue().startswith("users.csv -> user: 4 rows (")
    # Texts as written (float32 fields), canonical for int32 and bool; empty cells absent.
    assert hash_of(shared_redis, user.key("u1")) == {
        "activity": "0.1",
        "tenure": "3",
        "premium": "1",
    }
    assert hash_of(shared_redis, user.key("u3")) == {"tenure": "12"}
    assert hash_of(shared_redis, user.key("u4"))["activity"] == "1e30"
    for user_id in ("u1", "u2", "u3", "u4"):
        assert 0 < shared_redis.ttl(user.key(user_id)) <= 60


def test_an_empty_cell_deletes_the_stored_field(
    tmp_path: Path, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    user = definitions.entity("user")
    shared_redis.hset(user.key("u3"), mapping={"activity": "5", "tenure": "1"})
    load_file(write(tmp_path / "u.csv", USERS_CSV), user, SHARED_REDIS_URL, progress=None)
    assert hash_of(shared_redis, user.key("u3")) == {"tenure": "12"}
    assert shared_redis.ttl(user.key("u3")) == -1  # no TTL asked for


def test_parquet_round_trip(
    tmp_path: Path, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    item = definitions.entity("item")
    table = pa.table(
        {
            "item_id": pa.array([7, 8, 9], pa.int64()),
            "price": pa.array([0.1, None, 3.0], pa.float32()),
            "popularity": pa.array([1.5, 2.5, -1e-40], pa.float64()),
        }
    )
    path = tmp_path / "items.parquet"
    pq.write_table(table, path)
    assert load_file(path, item, SHARED_REDIS_URL, ttl_s=30, progress=None) == 3
    # float32 0.1 reaches Redis as the exact value's text, so it reads back bit for bit.
    assert hash_of(shared_redis, item.key("7")) == {
        "price": repr(float(np.float32(0.1))),
        "popularity": "1.5",
    }
    assert hash_of(shared_redis, item.key("8")) == {"popularity": "2.5"}
    assert 0 < shared_redis.ttl(item.key("9")) <= 30

    async def fetch() -> np.ndarray:
        store = RedisFeatureStore(redis_config())
        try:
            batch = await store.fetch(definitions.layout("ranker"), {"user": "u"}, ["7", "8", "9"])
        finally:
            await store.close()
        return batch.matrix

    matrix = asyncio.run(fetch())
    np.testing.assert_array_equal(matrix[:, 0], np.array([0.1, 9.5, 3.0], np.float32))  # item.price
    np.testing.assert_array_equal(
        matrix[:, 2], np.array([1.5, 2.5, -1e-40], np.float32)
    )  # popularity


def test_memory_store_serves_what_redis_serves_from_the_same_file(
    tmp_path: Path, definitions: FeatureDefinitions
) -> None:
    users = write(tmp_path / "users.csv", USERS_CSV)
    items = write(
        tmp_path / "items.csv",
        "item_id,popularity,price,emb_0\na,1,2,3\nb,,0.5,\nc,0.125,-4,1e-3\nd,,,\n",
    )
    for path, name in ((users, "user"), (items, "item")):
        load_file(path, definitions.entity(name), SHARED_REDIS_URL, progress=None)
    memory = MemoryFeatureStore.from_files(definitions, {"user": users, "item": items})
    layout = definitions.layout("ranker")
    requests = [("u1", ["a", "b", "c", "d", "zz"]), ("u3", ["c", "a"]), ("nobody", ["b"])]

    async def fetch_all(store: FeatureStore) -> list[FeatureBatch]:
        try:
            return [await store.fetch(layout, {"user": u}, i) for u, i in requests]
        finally:
            await store.close()

    from_redis = asyncio.run(fetch_all(RedisFeatureStore(redis_config())))
    from_memory = asyncio.run(fetch_all(memory))
    for a, b in zip(from_redis, from_memory, strict=True):
        assert a.matrix.tobytes() == b.matrix.tobytes()
        assert (a.missing_entities, a.missing_fields) == (b.missing_entities, b.missing_fields)
    # "d" has only empty cells: in Redis it has no key at all, so it counts as missing.
    assert (from_redis[0].missing_entities, from_redis[0].missing_fields) == (2, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,activity\nu1,1\n", r"no id column 'user_id' for entity 'user'"),
        ("user_id,activity,colour\nu1,1,red\n", r"unknown columns \['colour'\]"),
        ("user_id,activity,activity\nu1,1,2\n", r"columns repeat: \['activity'\]"),
        ("user_id,activity\nu1,1\nu2,abc\n", r"line 3, column 'activity': 'abc' is not a number"),
        ("user_id,tenure\nu1,1.5\n", r"line 2, column 'tenure': '1.5' is not an integer"),
        ("user_id,premium\nu1,maybe\n", r"line 2, column 'premium': 'maybe' is not a bool"),
        ("user_id,activity\nu1,inf\n", r"line 2, column 'activity': 'inf' is not a finite"),
        ("user_id,activity\nu1,1e39\n", r"'1e39' is not a finite float32"),
        ("user_id,activity\n ,1\n", r"line 2, column 'user_id': empty id"),
        ("user_id,activity\nu1,1,2\n", r"line 2: 3 cells, 2 columns"),
        ("", r"the file is empty"),
    ],
)
def test_file_errors_name_row_and_column(
    tmp_path: Path, definitions: FeatureDefinitions, text: str, message: str
) -> None:
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(FeatureFileError, match=message):
        load_file(path, definitions.entity("user"), SHARED_REDIS_URL, progress=None)


def test_an_error_after_a_written_batch_says_how_many_rows_were_written(
    tmp_path: Path, definitions: FeatureDefinitions, shared_redis: redis.Redis
) -> None:
    user = definitions.entity("user")
    path = write(tmp_path / "u.csv", "user_id,activity\nu1,1\nu2,2\nu3,x\n")
    with pytest.raises(FeatureFileError, match=r"line 4.*\(2 rows before it were written\)"):
        load_file(path, user, SHARED_REDIS_URL, batch_size_rows=2, progress=None)
    assert shared_redis.exists(user.key("u2")) and not shared_redis.exists(user.key("u3"))


def test_unreadable_files_and_an_unreachable_redis(
    tmp_path: Path, definitions: FeatureDefinitions
) -> None:
    user = definitions.entity("user")
    with pytest.raises(FeatureFileError, match="unsupported file type"):
        load_file(write(tmp_path / "u.json", "{}"), user, SHARED_REDIS_URL, progress=None)
    with pytest.raises(FeatureFileError, match="cannot read"):
        load_file(tmp_path / "absent.csv", user, SHARED_REDIS_URL, progress=None)
    with pytest.raises(FeatureFileError, match="cannot read"):
        load_file(
            write(tmp_path / "u.parquet", "not parquet"), user, SHARED_REDIS_URL, progress=None
        )
    with pytest.raises(InvalidArgument, match="invalid Redis URL 'localhost:6379'"):
        load_file(write(tmp_path / "u.csv", USERS_CSV), user, "localhost:6379", progress=None)
    down_url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(Unavailable, match=r"cannot write to Redis at .*\(0 rows were written\)"):
        load_file(write(tmp_path / "u.csv", USERS_CSV), user, down_url, progress=None)


def test_cli_loads_and_reports_errors_without_tracebacks(
    tmp_path: Path, prefix: str, shared_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "switchyard.yaml"
    section = features_section(prefix, kind="redis", url=SHARED_REDIS_URL)
    config.write_text(yaml.safe_dump({"features": section}))
    users = write(tmp_path / "users.csv", USERS_CSV)

    assert features_cli(["load", str(users), "--entity", "user", "--config", str(config)]) == 0
    assert "users.csv -> user: 4 rows" in capsys.readouterr().err
    assert shared_redis.hget(prefix + "user:u2", "tenure") == b"-7"

    assert features_cli(["load", str(users), "--entity", "usr", "--config", str(config)]) == 2
    assert "switchyard: unknown entity 'usr'" in capsys.readouterr().err

    bad = write(tmp_path / "bad.csv", "user_id,activity\nu1,x\n")
    assert (
        features_cli(["features", "load", str(bad), "--entity", "user", "--config", str(config)])
        == 1
    )
    err = capsys.readouterr().err
    assert "line 2, column 'activity'" in err and "Traceback" not in err

    config.write_text(yaml.safe_dump({"features": {**section, "inputs": {"m": {"row": []}}}}))
    assert features_cli(["load", str(users), "--entity", "user", "--config", str(config)]) == 2
    assert "features.inputs.m.candidates: Field required" in capsys.readouterr().err

    config.write_text(yaml.safe_dump({"models": []}))
    assert features_cli(["load", str(users), "--entity", "user", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "features: this file has no features section" in err and "Traceback" not in err

    with pytest.raises(SystemExit):
        features_cli(["load", str(users), "--entity", "user", "--ttl-s", "0"])
