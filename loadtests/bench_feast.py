"""Feast's online features: Switchyard's reader and Recommend against Feast's own fetch.

One run, one Redis, one materialized repo (the demo's users and items, written by
switchyard.demo.feast_repo, `feast apply` + `feast materialize` in .venv-feast). Times,
one call at a time, the fetch of 1 user + N items (the demo ranker's 16 features):

  switchyard reader      FeastFeatureStore.fetch in this process (uvloop, as the server)
  feast in process       FeatureStore.get_online_features in the Feast venv (timed there)
  feast serve (HTTP)     POST /get-online-features to `feast serve` on 127.0.0.1
  switchyard Recommend   the whole Recommend (fetch + rank + top-k) over gRPC to a real
                         gateway on kind: feast

and prints p50/p99 side by side with Recommend's p99 as a fraction of each Feast fetch.
Writes loadtests/results/feast.md.

Run: `.venv/bin/python -m loadtests.bench_feast [--items 100] [--requests 300]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc
import redis
import uvloop

from loadtests.feast_env import ensure_feast_env, feast, materialize, run_feast_json
from loadtests.gateway_process import REPO_ROOT, free_port, start_gateway
from loadtests.latency import percentiles_us, time_async_calls, time_calls
from loadtests.recommend_setup import SHARED_REDIS_URL, gateway_config
from switchyard.demo.build_model import ensure_built
from switchyard.demo.feast_repo import RANKER_ROW, write_feast_repo
from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc
from switchyard.server.features.config import parse_features
from switchyard.server.features.definitions import FeatureDefinitions
from switchyard.server.features.feast_store import FeastFeatureStore

RESULTS_PATH = REPO_ROOT / "loadtests" / "results" / "feast.md"
SERVE_READY_TIMEOUT_S = 180.0
RECOMMEND = "switchyard Recommend (gRPC, fetch + rank + top-k)"
FEAST_FETCHES = ("feast get_online_features (in process)", "feast serve (HTTP)")

_IN_PROCESS = """
import time
refs = {refs!r}
rows = [{{"user_id": "u42", "item_id": f"i{{n}}"}} for n in range({items})]
for _ in range({warmup}):
    store.get_online_features(features=refs, entity_rows=rows).to_dict()
samples = []
for _ in range({requests}):
    started = time.perf_counter()
    store.get_online_features(features=refs, entity_rows=rows).to_dict()
    samples.append(time.perf_counter() - started)
print(json.dumps(samples))
"""


def features_section(repo: Path) -> dict[str, Any]:
    return {
        "store": {"kind": "feast", "repo_path": str(repo), "pool_size": 4},
        "inputs": {"ranker": {"tensor": "features", "candidates": "item", "row": RANKER_ROW}},
    }


async def time_reader(repo: Path, items: list[str], requests: int, warmup: int) -> list[float]:
    config = parse_features(features_section(repo), repo, "bench")
    layout = FeatureDefinitions.from_config(config).layout("ranker")
    store = FeastFeatureStore(config.store)  # type: ignore[arg-type]  # kind: feast
    samples = await time_async_calls(
        lambda: store.fetch(layout, {"user": "u42"}, items), requests, warmup
    )
    await store.close()
    return samples


def time_feast_serve(repo: Path, items: list[str], requests: int, warmup: int) -> list[float]:
    port = free_port()
    python = ensure_feast_env()
    process = subprocess.Popen(
        [str(python.parent / "feast"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    body = json.dumps(
        {
            "features": [ref.replace(".", ":") for ref in RANKER_ROW],
            "entities": {"user_id": ["u42"] * len(items), "item_id": items},
        }
    ).encode()
    url = f"http://127.0.0.1:{port}/get-online-features"

    def call() -> None:
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    try:
        deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
        while True:
            try:
                call()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("feast serve did not answer") from None
                time.sleep(0.5)
        return time_calls(call, requests, warmup)
    finally:
        process.terminate()
        process.wait(timeout=30)


def time_recommend(
    repo: Path, workdir: Path, items: list[str], requests: int, warmup: int
) -> list[float]:
    config = gateway_config(ensure_built(), features_section(repo))
    config["recommend"] = {"max_candidates": max(len(items), 50)}
    # As the demo config runs it: ONNX Runtime's own thread pool only contends for the cores.
    config["models"][0]["runtime_options"] = {"intra_op_threads": 1}
    gateway = start_gateway(config, workdir)
    try:
        with grpc.insecure_channel(gateway.grpc_url) as channel:
            recommend = pb_grpc.RecommenderStub(channel).Recommend
            request = pb.RecommendRequest(
                endpoint="ranker", user_id="u42", candidate_ids=items, k=10
            )
            samples = time_calls(lambda: recommend(request, timeout=30), requests, warmup)
            response = recommend(request, timeout=30)
            assert len(response.items) == 10 and not response.features_degraded
            return samples
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    items = [f"i{n}" for n in range(args.items)]
    project = f"bench_{uuid.uuid4().hex[:8]}"
    with TemporaryDirectory() as tmp:
        repo = write_feast_repo(Path(tmp) / "repo", project=project)
        try:
            feast(repo, "apply")
            materialize(repo)
            results = {
                "switchyard reader (in process)": uvloop.run(
                    time_reader(repo, items, args.requests, args.warmup)
                ),
                "feast get_online_features (in process)": run_feast_json(
                    repo,
                    _IN_PROCESS.format(
                        refs=[r.replace(".", ":") for r in RANKER_ROW],
                        items=args.items,
                        warmup=args.warmup,
                        requests=args.requests,
                    ),
                ),
                "feast serve (HTTP)": time_feast_serve(repo, items, args.requests, args.warmup),
                RECOMMEND: time_recommend(repo, Path(tmp), items, args.requests, args.warmup),
            }
        finally:
            client = redis.Redis.from_url(SHARED_REDIS_URL)
            keys = list(client.scan_iter(match=f"*{project}", count=1000))
            if keys:
                client.delete(*keys)
    report = render(results, args)
    print(report)
    if not args.no_write:
        RESULTS_PATH.write_text(report)


def render(results: dict[str, list[float]], args: argparse.Namespace) -> str:
    stats = {name: percentiles_us(samples) for name, samples in results.items()}
    recommend_p99 = stats[RECOMMEND]["p99"]
    lines = [
        "# Feast online features: Switchyard vs Feast",
        "",
        f"1 user + {args.items} items (16 FLOAT features), {args.requests} sequential calls "
        f"after {args.warmup} warm-up, one Redis on 127.0.0.1, one run "
        "(`python -m loadtests.bench_feast`).",
        "",
        "| path | p50 ms | p99 ms | p99 / Recommend p99 |",
        "|---|---:|---:|---:|",
    ]
    for name, row in stats.items():
        ratio = row["p99"] / recommend_p99
        lines.append(f"| {name} | {row['p50'] / 1e3:.2f} | {row['p99'] / 1e3:.2f} | {ratio:.1f}x |")
    verdicts = [
        f"{stats[name]['p99'] / recommend_p99:.1f}x below {name}"
        + (
            " (target 5x: met)"
            if stats[name]["p99"] >= 5 * recommend_p99
            else " (target 5x: not met)"
        )
        for name in FEAST_FETCHES
    ]
    lines += ["", f"Switchyard's whole Recommend p99 is {' and '.join(verdicts)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
