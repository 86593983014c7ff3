"""Tracing on the Ray host, on a real local Ray: a call's trace continues from the caller
through the ingress replica into the variant deployment, whose spans join it (both export
over OTLP/HTTP to a real receiver)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from loadtests.gateway_process import free_port
from switchyard.server.config import load_config
from switchyard.server.grpc_ingress import INFER_SPAN
from tests.otlp_receiver import OtlpReceiver
from tests.ray_host.support import PAIR_MODEL, build_pair_model

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from switchyard.server.ray_host.app import start_on_local_ray  # noqa: E402
from switchyard.server.ray_host.deployments import fast_path_env  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s`:DeprecationWarning")

CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
EXPORT_WAIT_S = 60.0


def only(spans: list[Span], name: str, parent_id: bytes) -> Span:
    found = [s for s in spans if s.name == name and s.parent_span_id == parent_id]
    assert len(found) == 1, f"{name} under {parent_id.hex()}: {[s.name for s in spans]}"
    return found[0]


def test_the_trace_goes_from_the_caller_through_the_ingress_into_the_variant(
    tmp_path: Path,
) -> None:
    http_port, grpc_port = free_port(), free_port()
    with OtlpReceiver() as receiver, pytest.MonkeyPatch.context() as env:
        config = {
            "server": {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port},
            "models": [
                {
                    "name": PAIR_MODEL,
                    "versions": [
                        {"version": "1", "path": str(build_pair_model(tmp_path / "pair.onnx"))}
                    ],
                    "ray": {"placement": "deployment", "num_cpus": 0.25},
                }
            ],
            "ray": {"ingress_replicas": 1, "ingress_num_cpus": 0.5},
            "tracing": {
                "enabled": True,
                "otlp_endpoint": receiver.endpoint,
                "service_name": "ray-tracing-test",
            },
        }
        path = tmp_path / "switchyard.yaml"
        path.write_text(yaml.safe_dump(config))
        loaded = load_config(path)
        for name, value in fast_path_env(loaded, local=True).items():
            env.setenv(name, value)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within a fraction of a second
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            start_on_local_ray(loaded, path)
            tensors = []
            data = np.arange(8, dtype=np.float32).reshape(2, 4)
            for name in "ab":
                tensors.append(triton_grpc.InferInput(name, [2, 4], "FP32"))
                tensors[-1].set_data_from_numpy(data)
            client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            answer = client.infer(PAIR_MODEL, tensors, headers={"traceparent": TRACEPARENT})
            np.testing.assert_array_equal(answer.as_numpy("z"), 2 * data)
            give_up_s = time.monotonic() + EXPORT_WAIT_S
            while sum(s.name == "batcher.compute" for s in receiver.spans()) < 2:
                assert time.monotonic() < give_up_s, [s.name for s in receiver.spans()]
                time.sleep(0.1)
        finally:
            serve.shutdown()
            ray.shutdown()
    spans = [s for s in receiver.spans() if s.trace_id == CALLER_TRACE_ID.to_bytes(16, "big")]
    request = only(spans, INFER_SPAN, CALLER_SPAN_ID.to_bytes(8, "big"))
    ingress_batch = only(spans, "batcher.compute", request.span_id)
    # In the variant's process: its span is a child of the ingress's call, its batch of it.
    variant = only(spans, "variant.infer", ingress_batch.span_id)
    only(spans, "batcher.compute", variant.span_id)
    services = {
        attribute.value.string_value
        for resource in receiver.resource_spans()
        for attribute in resource.resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"ray-tracing-test"}
