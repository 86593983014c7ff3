"""What feedback costs: Recommend throughput and gateway CPU per request with it on and off.

One gateway per mode on the demo (memory feature store), driven closed-loop over gRPC by
`--concurrency` callers for `--duration-s`, 1 user x `--candidates` candidates, top 10:
  off:           feedback.enabled false (no prediction kept)
  on:            predictions kept (the Recommend path's whole extra cost)
  on + feedback: and every response's clicks posted to Recommender.Feedback (the join)
each of "on" twice: the memory prediction log, and the Redis one (`control.store: redis` on
a redis-server of the benchmark's own: background batched writes, GET + SET NX per join).
req/s counts Recommend calls; CPU us/req is the gateway process tree's CPU over them. The
modes run interleaved `--rounds` times and the median of each is shown: on a shared machine
one run's figures move by tens of us.

Run: `.venv/bin/python -m loadtests.bench_feedback [--duration-s 10] [--concurrency 16]
[--rounds 3]`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import uvloop
import yaml

from loadtests.gateway_process import start_gateway
from loadtests.procstat import tree_cpu_s
from loadtests.recommend_setup import gateway_config
from loadtests.redis_process import RedisServer
from switchyard.demo.build_model import ensure_built
from switchyard.demo.paths import DEMO_CONFIG_PATH, artifacts_dir
from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc


async def drive(
    url: str, duration_s: float, concurrency: int, candidates: int, post_feedback: bool
) -> int:
    items = [f"i{n}" for n in range(candidates)]
    done = 0
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.RecommenderStub(channel)
        end = time.monotonic() + duration_s

        async def caller(worker: int) -> None:
            nonlocal done
            n = worker
            while time.monotonic() < end:
                request = pb.RecommendRequest(
                    endpoint="recs", user_id=f"u{n % 1000}", candidate_ids=items, k=10
                )
                try:
                    response = await stub.Recommend(request, timeout=5)
                except grpc.aio.AioRpcError as error:
                    # Shed under contention (a shared machine): not a Recommend answered.
                    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(0.01)
                    continue
                if post_feedback:
                    clicked = pb.ClickedItems(item_ids=[response.items[n % 10].item_id])
                    await stub.Feedback(
                        pb.FeedbackRequest(request_id=response.request_id, clicked=clicked),
                        timeout=5,
                    )
                done += 1
                n += concurrency

        await asyncio.gather(*(caller(w) for w in range(concurrency)))
    return done


MODES = (
    ("off", False, False, "memory"),
    ("on", True, False, "memory"),
    ("on + feedback", True, True, "memory"),
    ("on", True, False, "redis"),
    ("on + feedback", True, True, "redis"),
)


def run_mode(
    args: argparse.Namespace,
    features: dict[str, Any],
    workdir: Path,
    enabled: bool,
    post: bool,
    redis_url: str | None,
) -> tuple[float, float]:
    """(Recommend req/s, gateway CPU us per Recommend) of one mode."""
    workdir.mkdir()
    config = gateway_config(ensure_built(), features)
    config["recommend"] = {"max_candidates": max(500, args.candidates)}
    config["feedback"] = {"enabled": enabled}
    if redis_url is not None:
        prefix = f"bench-feedback-{uuid.uuid4().hex[:8]}:"
        config["control"] = {"store": "redis", "url": redis_url, "prefix": prefix}
    gateway = start_gateway(config, workdir)
    try:
        uvloop.run(drive(gateway.grpc_url, 1.0, args.concurrency, args.candidates, post))
        cpu_before_s = tree_cpu_s(gateway.process.pid)
        started = time.monotonic()
        count = uvloop.run(
            drive(gateway.grpc_url, args.duration_s, args.concurrency, args.candidates, post)
        )
        elapsed_s = time.monotonic() - started
        cpu_s = tree_cpu_s(gateway.process.pid) - cpu_before_s
    finally:
        gateway.stop()
    return count / elapsed_s, cpu_s / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    defaults = yaml.safe_load(DEMO_CONFIG_PATH.read_text())["features"]
    features = {
        **defaults,
        "store": {
            "kind": "memory",
            "seed_files": {
                e: str(artifacts_dir() / p) for e, p in defaults["store"]["seed_files"].items()
            },
        },
    }
    results: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(MODES))}
    with tempfile.TemporaryDirectory() as tmp:
        redis_dir = Path(tmp) / "redis"
        redis_dir.mkdir()
        redis_server = RedisServer(redis_dir)
        redis_server.start()
        try:
            for round_ in range(args.rounds):
                for i, (_, enabled, post, log) in enumerate(MODES):
                    url = redis_server.url if log == "redis" else None
                    workdir = Path(tmp) / f"r{round_}-m{i}"
                    results[i].append(run_mode(args, features, workdir, enabled, post, url))
        finally:
            redis_server.stop()
    print(
        f"\nRecommend over gRPC, closed loop x{args.concurrency}, 1 user x {args.candidates} "
        f"candidates, top 10, {args.duration_s:.0f} s per mode, median of {args.rounds}"
    )
    print(f"| {'feedback':<14} | {'log':<6} | {'req/s':>8} | {'CPU us/req':>10} |")
    print(f"|{'-' * 16}|{'-' * 8}|{'-' * 10}|{'-' * 12}|")
    for i, (name, enabled, _, log) in enumerate(MODES):
        rate = statistics.median(r for r, _ in results[i])
        cpu_us = statistics.median(c for _, c in results[i])
        print(f"| {name:<14} | {log if enabled else '-':<6} | {rate:8.0f} | {cpu_us:10.0f} |")


if __name__ == "__main__":
    main()
