"""Replay the demo's users against Recommend and post the clicks their hidden tastes draw.

Each request: a random user and `candidates` random items, Recommend top `k` over REST,
then a click on each shown item with the probability the demo's generative model gives
(demo/build_model.py generate_data, regenerated from the build's seed), posted to
/v1/feedback. A worse ranker shows items the user is less likely to click, so its online
CTR@k and AUC drop while its latency and errors stay healthy.

Run: `python -m loadtests.replay_clicks --url http://127.0.0.1:8000 --requests 3000`
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from switchyard.demo.build_model import DemoData, generate_data

DEMO_SEED = 7  # build_model's default seed: the same users, items and tastes


@dataclass(frozen=True, slots=True)
class ReplayResult:
    requests: int
    errors: int
    clicks: int
    shown: int
    feedback: Counter[str]


def demo_tastes(seed: int = DEMO_SEED) -> DemoData:
    return generate_data(np.random.default_rng(seed))


def replay(
    url: str,
    requests: int,
    *,
    endpoint: str = "recs",
    k: int = 5,
    candidates: int = 20,
    workers: int = 4,
    seed: int = 1,
    stop: Callable[[], bool] = lambda: False,
) -> ReplayResult:
    """Send `requests` Recommend calls with feedback (fewer if `stop` turns true)."""
    data = demo_tastes()
    n_users, n_items = len(data.user_features), len(data.item_features)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lock = threading.Lock()
    totals: dict[str, int] = Counter()
    feedback: Counter[str] = Counter()
    local = threading.local()

    def post(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, port, timeout=30)
        connection.request("POST", path, body=json.dumps(body))
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def one(index: int) -> None:
        if stop():
            return
        rng = np.random.default_rng([seed, index])
        user = int(rng.integers(n_users))
        items = rng.choice(n_items, size=candidates, replace=False)
        status, body = post(
            "/v1/recommend",
            {
                "endpoint": endpoint,
                "user_id": f"u{user}",
                "candidate_ids": [f"i{i}" for i in items],
                "k": k,
            },
        )
        if status != 200:
            with lock:
                totals["errors"] += 1
            return
        shown = np.array([int(item["item_id"][1:]) for item in body["items"]])
        clicked = rng.random(len(shown)) < data.click_probability(user, shown)
        _, answer = post(
            "/v1/feedback",
            {
                "request_id": body["request_id"],
                "clicked_item_ids": [f"i{i}" for i in shown[clicked]],
            },
        )
        with lock:
            totals["requests"] += 1
            totals["clicks"] += int(clicked.sum())
            totals["shown"] += len(shown)
            feedback[str(answer.get("reason", "error"))] += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(requests)))
    return ReplayResult(
        totals["requests"], totals["errors"], totals["clicks"], totals["shown"], feedback
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's REST URL")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--endpoint", default="recs")
    parser.add_argument("--k", type=int, default=5, help="items shown per request")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    result = replay(args.url, args.requests, endpoint=args.endpoint, k=args.k, workers=args.workers)
    ctr = result.clicks / result.shown if result.shown else 0.0
    print(
        f"{result.requests} requests, {result.errors} errors, CTR {ctr:.3f} "
        f"({result.clicks}/{result.shown}), feedback {dict(result.feedback)}"
    )


if __name__ == "__main__":
    main()
