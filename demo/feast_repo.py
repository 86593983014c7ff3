"""A Feast repo of the demo's users and items, for the `kind: feast` tests and benchmark.

    write_feast_repo(out_dir, redis_host_port="127.0.0.1:6379", db=0, project="demo")

writes feature_store.yaml (a Redis online store, a file offline store, the local file
registry), data/users.parquet and data/items.parquet from the demo build's users.csv and
items.csv, and features.py with entities user (user_id) and item (item_id) and the views
user_stats and item_stats (FLOAT features, ttl 1 day). `feast apply` and
`feast materialize` (in .venv-feast, scripts/feast_env.sh) then fill the online store.

stale_user_ids get an event timestamp older than the ttl; with extra_view, a view
user_recent (its `activity` twice user_stats's) is declared too, as a registry change.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from switchyard.demo.paths import artifacts_dir

TTL_S = 86_400
USER_FEATURES = ("activity", "tenure", "pref_0", "pref_1", "pref_2", "pref_3", "pref_4", "pref_5")
ITEM_FEATURES = ("popularity", "price", "emb_0", "emb_1", "emb_2", "emb_3", "emb_4", "emb_5")
# The demo ranker's row in Feast references: the user's 8 features, then the item's 8.
RANKER_ROW = [f"user_stats.{name}" for name in USER_FEATURES] + [
    f"item_stats.{name}" for name in ITEM_FEATURES
]

_FEATURE_STORE_YAML = """\
project: {project}
registry: data/registry.db
provider: local
online_store:
  type: redis
  connection_string: "{redis_host_port},db={db}"
offline_store:
  type: file
entity_key_serialization_version: 3
"""

_DEFINITIONS = '''\
"""The demo's users and items (written by switchyard.demo.feast_repo)."""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

DATA = Path(__file__).resolve().parent / "data"
TTL = timedelta(seconds={ttl_s})

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING)

users_source = FileSource(path=str(DATA / "users.parquet"), timestamp_field="event_timestamp")
items_source = FileSource(path=str(DATA / "items.parquet"), timestamp_field="event_timestamp")

user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=TTL,
    schema=[{user_fields}],
    source=users_source,
)
item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=TTL,
    schema=[{item_fields}],
    source=items_source,
)
'''

_EXTRA_VIEW = """
user_recent_source = FileSource(
    path=str(DATA / "users_recent.parquet"), timestamp_field="event_timestamp"
)
user_recent = FeatureView(
    name="user_recent",
    entities=[user],
    ttl=TTL,
    schema=[Field(name="activity", dtype=Float32)],
    source=user_recent_source,
)
"""


def _read_csv(path: Path) -> tuple[list[str], list[list[float]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    ids = [row[0] for row in rows[1:]]
    return ids, [[float(cell) for cell in row[1:]] for row in rows[1:]]


def _write_parquet(
    path: Path,
    id_column: str,
    ids: list[str],
    names: Iterable[str],
    columns: list[list[float]],
    event_times: list[dt.datetime],
) -> None:
    arrays = {id_column: pa.array(ids, pa.string())}
    for name, values in zip(names, columns, strict=True):
        arrays[name] = pa.array(values, pa.float32())
    arrays["event_timestamp"] = pa.array(event_times, pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table(arrays), path)


def write_feast_repo(
    out_dir: Path,
    *,
    redis_host_port: str = "127.0.0.1:6379",
    db: int = 0,
    project: str = "switchyard_demo",
    stale_user_ids: Iterable[str] = (),
    extra_view: bool = False,
    demo_dir: Path | None = None,
    now: dt.datetime | None = None,
) -> Path:
    """Write the repo into out_dir (created); returns out_dir. The demo must be built."""
    demo_dir = demo_dir or artifacts_dir()
    now = now or dt.datetime.now(dt.UTC)
    fresh = now - dt.timedelta(hours=1)
    stale = now - dt.timedelta(seconds=10 * TTL_S)
    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    stale_ids = set(stale_user_ids)
    user_ids, user_rows = _read_csv(demo_dir / "users.csv")
    item_ids, item_rows = _read_csv(demo_dir / "items.csv")
    user_times = [stale if i in stale_ids else fresh for i in user_ids]
    user_columns = [list(column) for column in zip(*user_rows, strict=True)]
    item_columns = [list(column) for column in zip(*item_rows, strict=True)]
    _write_parquet(
        data / "users.parquet", "user_id", user_ids, USER_FEATURES, user_columns, user_times
    )
    _write_parquet(
        data / "items.parquet",
        "item_id",
        item_ids,
        ITEM_FEATURES,
        item_columns,
        [fresh] * len(item_ids),
    )
    definitions = _DEFINITIONS.format(
        ttl_s=TTL_S,
        user_fields=", ".join(f'Field(name="{n}", dtype=Float32)' for n in USER_FEATURES),
        item_fields=", ".join(f'Field(name="{n}", dtype=Float32)' for n in ITEM_FEATURES),
    )
    if extra_view:
        recent = [[2 * value for value in user_columns[0]]]
        _write_parquet(
            data / "users_recent.parquet",
            "user_id",
            user_ids,
            ["activity"],
            recent,
            [fresh] * len(user_ids),
        )
        definitions += _EXTRA_VIEW
    (out_dir / "features.py").write_text(definitions)
    (out_dir / "feature_store.yaml").write_text(
        _FEATURE_STORE_YAML.format(project=project, redis_host_port=redis_host_port, db=db)
    )
    return out_dir
