"""Mutated real requests against a running gateway, over gRPC and REST: every answer must be
the caller's fault (a 4xx-class status) or a success, never INTERNAL / UNKNOWN / 500, and
the gateway must answer a valid request correctly afterwards.

  python -m loadtests.fuzz [--mutations N] [--seed S]

Mutations of a valid ModelInfer (its serialized bytes for gRPC, its JSON body for REST):
bytes flipped, inserted, deleted; truncation; fields replaced with hostile values (huge
or negative dims, many dims, wrong datatypes, non-numbers in FP32 data, long names).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from loadtests.gateway_process import Gateway, demo_model_config, start_gateway
from switchyard.demo.build_model import ensure_built
from switchyard.protos import open_inference_pb2 as pb

GRPC_ALLOWED = frozenset(
    {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
     "OUT_OF_RANGE", "UNIMPLEMENTED"}
)  # fmt: skip
HOSTILE_VALUES: list[Any] = [
    None, True, "x", -1, 0, 2**63, 1e308, float("nan"), [], {}, [[1]], "A" * 20_000,
]  # fmt: skip
ROWS = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)


@dataclass
class FuzzReport:
    grpc: Counter[str] = field(default_factory=Counter)
    rest: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # answers that blame the server
    still_correct: bool = False

    def print(self) -> None:
        print(f"gRPC answers: {dict(self.grpc)}")
        print(f"REST answers: {dict(self.rest)}")
        print(f"server-fault answers: {len(self.bad)}; correct afterwards: {self.still_correct}")
        for line in self.bad[:10]:
            print(f"  {line}")


def valid_request() -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[2, 16])
    return pb.ModelInferRequest(
        model_name="ranker", inputs=[tensor], raw_input_contents=[ROWS.tobytes()]
    )


def valid_body() -> dict[str, Any]:
    tensor = {"name": "features", "datatype": "FP32", "shape": [2, 16]}
    return {"inputs": [{**tensor, "data": ROWS.flatten().tolist()}]}


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(4)
        position = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buffer[position:position] = rng.randbytes(rng.randint(1, 8))
        elif choice == 2:
            del buffer[position : position + rng.randint(1, 8)]
        else:
            del buffer[position:]
    return bytes(buffer)


def mutate_body(body: dict[str, Any], rng: random.Random) -> Any:
    """A JSON body with one field of the tensor (or the body) replaced by a hostile value."""
    tensor = body["inputs"][0]
    key = rng.choice(["name", "datatype", "shape", "data", "parameters", "inputs", "outputs"])
    value = rng.choice(HOSTILE_VALUES)
    if key == "shape" and rng.random() < 0.5:
        value = rng.choice([[0, 10**12], [1] * 64, [-1, 16], [2**40, 2**40], [2, 16, 1]])
    if key == "data" and rng.random() < 0.5:
        data = list(tensor["data"])
        data[rng.randrange(len(data))] = rng.choice([None, True, "1.0", [1.0], {}])
        value = data
    if key in ("inputs", "outputs", "parameters"):
        return {**body, key: value}
    return {"inputs": [{**tensor, key: value}]}


def run(gateway: Gateway, mutations: int, seed: int) -> FuzzReport:
    rng = random.Random(seed)
    report = FuzzReport()
    payload = valid_request().SerializeToString()
    with grpc.insecure_channel(gateway.grpc_url) as channel:
        infer: Callable[..., bytes] = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer"
        )
        for _ in range(mutations):
            mutated = mutate_bytes(payload, rng)
            try:
                infer(mutated, timeout=10)
                outcome = "OK"
            except grpc.RpcError as error:
                outcome = error.code().name
                if outcome not in GRPC_ALLOWED:
                    detail = error.details()
                    report.bad.append(f"gRPC {outcome}: {detail!r:.200} for {mutated!r:.80}")
            report.grpc[outcome] += 1
        answer = pb.ModelInferResponse.FromString(infer(payload, timeout=10))
        report.still_correct = len(answer.raw_output_contents) == 2
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    for n in range(mutations):
        if n % 2:
            body = json.dumps(mutate_body(valid_body(), rng), allow_nan=True).encode()
        else:
            body = mutate_bytes(json.dumps(valid_body()).encode(), rng)
        connection.request("POST", "/v2/models/ranker/infer", body=body)
        response = connection.getresponse()
        text = response.read()
        report.rest[str(response.status)] += 1
        if response.status >= 500:
            report.bad.append(f"REST {response.status}: {text[:200]!r} for {body[:80]!r}")
        if response.getheader("connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10)
    connection.request("POST", "/v2/models/ranker/infer", body=json.dumps(valid_body()))
    response = connection.getresponse()
    report.still_correct = report.still_correct and response.status == 200
    response.read()
    connection.close()
    return report


def fuzz_gateway(workdir: Path, mutations: int, seed: int) -> FuzzReport:
    gateway = start_gateway(demo_model_config(ensure_built()), workdir)
    try:
        return run(gateway, mutations, seed)
    finally:
        gateway.stop()


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=2000, help="per protocol")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switchyard-fuzz-") as tmp:
        report = fuzz_gateway(Path(tmp), args.mutations, args.seed)
    report.print()
    return 0 if not report.bad and report.still_correct else 1


if __name__ == "__main__":
    raise SystemExit(main())
