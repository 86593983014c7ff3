"""kind: feast end to end: the real Feast applies and materializes the demo's users and items
into the test Redis; the gateway reads them in Feast's layout and must score exactly what
ONNX Runtime scores on the rows FeatureStore.get_online_features returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import redis
import yaml

from loadtests.feast_env import feast, feast_python_or_skip, materialize, run_feast_json
from loadtests.gateway_process import Gateway, scrape_metrics, start_gateway
from loadtests.recommend_setup import SHARED_REDIS_URL, gateway_config
from switchyard.demo.feast_repo import RANKER_ROW, write_feast_repo
from switchyard.server.features.config import FeatureConfigError, parse_features
from tests.server.test_recommend_e2e import grpc_recommend

STALE_USER = "u7"
ITEMS = [f"i{n}" for n in range(0, 400, 13)] + ["no-such-item"]
# A default of one user feature, to see defaults served (the others are 0).
DEFAULTS = {"user_stats.tenure": 6.6, "item_stats:price": 3.4}


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One repo for the module, applied and materialized once (a minute on 2 cores); its
    project name is unique, so its Redis keys are this module's own."""
    feast_python_or_skip()
    project = f"sy_{uuid.uuid4().hex[:8]}"
    repo = write_feast_repo(
        tmp_path_factory.mktemp("feast_repo"), project=project, stale_user_ids=[STALE_USER]
    )
    feast(repo, "apply")
    materialize(repo)
    yield repo
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = list(client.scan_iter(match=f"*{project}", count=1000))
    if keys:
        client.delete(*keys)


def feast_features(repo: Path, user: str, items: list[str]) -> dict[str, list[Any]]:
    """get_online_features of the ranker's row for user and each item, by Feast itself."""
    refs = [ref.replace(".", ":") for ref in RANKER_ROW]
    code = (
        f"rows = [{{'user_id': {user!r}, 'item_id': i}} for i in {items!r}]\n"
        f"result = store.get_online_features(features={refs!r}, entity_rows=rows,"
        " full_feature_names=True).to_dict()\n"
        "print(json.dumps(result))\n"
    )
    result: dict[str, list[Any]] = run_feast_json(repo, code)
    return result


def rows_from_feast(result: dict[str, list[Any]], stale_views: tuple[str, ...] = ()) -> np.ndarray:
    """The model rows: Feast's values, the configured default (else 0) where Feast has none,
    and defaults for views past their ttl."""
    defaults = {ref.replace(":", "."): value for ref, value in DEFAULTS.items()}
    columns = []
    for ref in RANKER_ROW:
        view, _, name = ref.partition(".")
        values = result[f"{view}__{name}"]
        default = defaults.get(ref, 0.0)
        stale = view in stale_views
        columns.append([default if v is None or stale else v for v in values])
    return np.array(columns, np.float32).T


@pytest.fixture(scope="module")
def feast_gateway(
    feast_repo: Path, demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    features = {
        "store": {"kind": "feast", "repo_path": str(feast_repo)},
        "inputs": {"ranker": {"tensor": "features", "candidates": "item", "row": RANKER_ROW}},
        "defaults": DEFAULTS,
    }
    gateway = start_gateway(
        gateway_config(demo_model_path, features), tmp_path_factory.mktemp("feast_gw")
    )
    yield gateway
    gateway.stop()


def scores_of(session: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    (scores,) = session.run(["score"], {"features": rows})
    return np.asarray(scores).reshape(-1)


def gateway_scores(gateway: Gateway, user: str, items: list[str]) -> np.ndarray:
    response = grpc_recommend(gateway, endpoint="ranker", user_id=user, candidate_ids=items)
    got = {item.item_id: item.score for item in response.items}
    assert not response.features_degraded
    return np.array([got[i] for i in items], np.float32)


def test_scores_equal_onnxruntime_on_feasts_online_features(
    feast_repo: Path, feast_gateway: Gateway, direct_session: ort.InferenceSession
) -> None:
    result = feast_features(feast_repo, "u42", ITEMS)
    assert result["item_stats__price"][-1] is None  # no-such-item: Feast has nothing either
    assert all(v is not None for v in result["user_stats__activity"])
    expected = scores_of(direct_session, rows_from_feast(result))
    np.testing.assert_array_equal(gateway_scores(feast_gateway, "u42", ITEMS), expected)


def test_stale_and_missing_users_get_defaults_and_are_counted(
    feast_repo: Path, feast_gateway: Gateway, direct_session: ort.InferenceSession
) -> None:
    before = scrape_metrics(feast_gateway)
    items = ITEMS[:5]
    # Feast's get_online_features returns the stale user's values as present (0.67 applies
    # the ttl only to precomputed vectors); Switchyard serves defaults for them.
    stale = feast_features(feast_repo, STALE_USER, items)
    assert stale["user_stats__activity"][0] is not None
    stale_expected = scores_of(direct_session, rows_from_feast(stale, stale_views=("user_stats",)))
    # Its defaults score differently from its values, so serving the values would fail here.
    assert not np.array_equal(scores_of(direct_session, rows_from_feast(stale)), stale_expected)
    np.testing.assert_array_equal(gateway_scores(feast_gateway, STALE_USER, items), stale_expected)
    missing = feast_features(feast_repo, "no-such-user", items)
    assert missing["user_stats__activity"] == [None] * len(items)
    expected = scores_of(direct_session, rows_from_feast(missing))
    np.testing.assert_array_equal(gateway_scores(feast_gateway, "no-such-user", items), expected)
    after = scrape_metrics(feast_gateway)

    def delta(name: str) -> float:
        return counter(after, name) - counter(before, name)

    assert delta("switchyard_features_stale_values_total") == 8  # the stale user's 8
    assert delta("switchyard_features_missing_entities_total") == 2  # stale user, no-such-user


def counter(text: str, name: str) -> float:
    """The value of an unlabelled counter in an exposition text."""
    return next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
    )


def test_a_new_feature_view_is_picked_up_on_restart(
    feast_repo: Path,
    feast_gateway: Gateway,
    demo_model_path: Path,
    direct_session: ort.InferenceSession,
    tmp_path: Path,
) -> None:
    """Last in the module: it adds a view to the shared repo."""
    row = ["user_recent.activity", *RANKER_ROW[1:]]
    features = {
        "store": {"kind": "feast", "repo_path": str(feast_repo)},
        "inputs": {"ranker": {"tensor": "features", "candidates": "item", "row": row}},
    }
    with pytest.raises(
        FeatureConfigError, match="'user_recent.activity' not in the Feast registry"
    ):
        parse_features(features, tmp_path, "test.yaml")
    project = yaml.safe_load((feast_repo / "feature_store.yaml").read_text())["project"]
    write_feast_repo(feast_repo, project=project, stale_user_ids=[STALE_USER], extra_view=True)
    feast(feast_repo, "apply")
    materialize(feast_repo)
    refs = [ref.replace(".", ":") for ref in row]
    code = (
        f"rows = [{{'user_id': 'u42', 'item_id': i}} for i in {ITEMS[:5]!r}]\n"
        f"print(json.dumps(store.get_online_features(features={refs!r}, entity_rows=rows,"
        " full_feature_names=True).to_dict()))\n"
    )
    result = run_feast_json(feast_repo, code)
    rows = np.array([result[ref.replace(":", "__")] for ref in refs], np.float32).T
    # The running gateway keeps the layout it started with; a restarted one reads the view.
    np.testing.assert_array_equal(
        gateway_scores(feast_gateway, "u42", ITEMS[:5]),
        scores_of(direct_session, rows_from_feast(feast_features(feast_repo, "u42", ITEMS[:5]))),
    )
    restarted = start_gateway(gateway_config(demo_model_path, features), tmp_path)
    try:
        got = gateway_scores(restarted, "u42", ITEMS[:5])
    finally:
        restarted.stop()
    np.testing.assert_array_equal(got, scores_of(direct_session, rows))
    # user_recent.activity is twice user_stats.activity, so the scores did change.
    assert not np.array_equal(got, gateway_scores(feast_gateway, "u42", ITEMS[:5]))
