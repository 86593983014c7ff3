"""Recommend end to end at a fixed request rate (open loop), beside the feature fetch alone.

Starts the gateway on the demo (ranker + `recs` endpoint) with its features in Redis
(loaded with `switchyard features load` under a key prefix of this run) and sends
Recommend over gRPC at a fixed rate: one user and 100 candidates per request. Latency is
counted from each request's scheduled send time.

Run: `.venv/bin/python -m loadtests.bench_recommend [--rate 200] [--duration-s 10]`
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

import grpc
import redis
import uvloop
import yaml

from loadtests.gateway_process import start_gateway
from loadtests.open_loop import OpenLoopResult, run_open_loop
from loadtests.recommend_setup import (
    SHARED_REDIS_URL,
    demo_features,
    gateway_config,
    load_features,
)
from switchyard.demo.build_model import ensure_built
from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc


async def drive(url: str, rate: float, duration_s: float, candidates: int) -> OpenLoopResult:
    items = [f"i{n}" for n in range(candidates)]
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        users = iter(range(10**9))

        async def call() -> None:
            user = f"u{next(users) % 1000}"
            request = pb.RecommendRequest(endpoint="recs", user_id=user, candidate_ids=items, k=10)
            await stub.Recommend(request, timeout=5)

        return await run_open_loop(call, rate, duration_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    prefix = f"switchyard-bench:{uuid.uuid4().hex[:8]}:"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store_name, store in (
            ("memory store", {"kind": "memory"}),
            ("redis store", {"kind": "redis", "url": SHARED_REDIS_URL, "timeout_s": 0.05}),
        ):
            workdir = Path(tmp) / store_name.split()[0]
            workdir.mkdir()
            features = demo_features(prefix, store)
            if store["kind"] == "memory":  # seeded from the demo's own feature files
                defaults = yaml.safe_load((Path("demo") / "config.yaml").read_text())["features"]
                features["store"] = {
                    "kind": "memory",
                    "seed_files": {
                        e: str(Path("demo").resolve() / p)
                        for e, p in defaults["store"]["seed_files"].items()
                    },
                }
            config = gateway_config(ensure_built(), features)
            config["recommend"] = {"max_candidates": max(500, args.candidates)}
            (workdir / "features.yaml").write_text(yaml.safe_dump(config))
            if store["kind"] == "redis":
                load_features(workdir / "features.yaml")
            gateway = start_gateway(config, workdir)
            try:
                results[store_name] = uvloop.run(
                    drive(gateway.grpc_url, args.rate, args.duration_s, args.candidates)
                )
            finally:
                gateway.stop()
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    print(
        f"\nRecommend over gRPC, 1 user x {args.candidates} candidates, top 10, "
        f"{args.rate:.0f} req/s for {args.duration_s:.0f} s (open loop)"
    )
    print(f"| {'features':<14} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 16}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for name, r in results.items():
        print(
            f"| {name:<14} | {r.percentile_ms(0.5):7.2f} | {r.percentile_ms(0.9):7.2f} "
            f"| {r.percentile_ms(0.99):7.2f} | {r.errors:6d} |"
        )
        if r.first_error:
            print(f"  first error ({name}): {r.first_error}")


if __name__ == "__main__":
    main()
