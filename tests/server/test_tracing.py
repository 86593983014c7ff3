"""OpenTelemetry tracing: the span tree of real calls through the standalone server run in
process (spans caught by the SDK's in-memory exporter), the trace context passed on to a
gRPC model server, the OTLP export to a real HTTP receiver, and tracing off."""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from switchyard.demo.paths import DEMO_CONFIG_PATH
from switchyard.protos import open_inference_pb2 as oip
from switchyard.protos import open_inference_pb2_grpc as oip_grpc
from switchyard.protos import recommend_pb2 as rec
from switchyard.protos import recommend_pb2_grpc as rec_grpc
from switchyard.runtimes import tracing
from switchyard.runtimes.base import ModelSignature, Runtime
from switchyard.runtimes.batcher import BatchingOptions, DynamicBatcher
from switchyard.runtimes.triton_runtime import TritonModel, TritonOptions
from switchyard.server import tracing as tracing_setup
from switchyard.server.app import StandaloneServer
from switchyard.server.config import SwitchyardConfig, parse_config
from switchyard.server.grpc_ingress import INFER_SPAN
from switchyard.server.recommend_ingress import GRPC_SPAN, RECOMMEND_REST_SPAN
from switchyard.server.tracing import TracingSettings, configure_tracing, shutdown_tracing
from tests.otlp_receiver import OtlpReceiver

CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
TRACESTATE = "vendor=opaque"
ITEMS = ["i1", "i2", "i3", "i4", "i5"]
SHADOW_WAIT_S = 10.0


@pytest.fixture(autouse=True)
def no_tracing_left_over() -> Iterator[None]:
    yield
    shutdown_tracing()


def gateway_config(model_path: Path, workdir: Path) -> SwitchyardConfig:
    """The demo ranker behind endpoint `recs`, mirrored to a shadow, with a queue delay so
    that requests wait in the batcher; the demo's features, held in memory (defaults)."""
    demo = yaml.safe_load(DEMO_CONFIG_PATH.read_text())
    features: dict[str, Any] = copy.deepcopy(demo["features"])
    features["store"] = {"kind": "memory"}
    model: dict[str, Any] = {
        "versions": [{"version": "1", "path": str(model_path)}],
        "batching": {"max_batch_size": 16, "max_queue_delay_s": 0.002},
    }
    raw = {
        "server": {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0},
        "models": [{"name": "ranker", **model}, {"name": "ranker_next", **model}],
        "endpoints": [
            {
                "name": "recs",
                "variants": {"live": {"model": "ranker"}, "next": {"model": "ranker_next"}},
                "weights": {"live": 1},
                "shadow": {"variants": ["next"], "fraction": 1.0},
            }
        ],
        "features": features,
    }
    return parse_config(raw, workdir, "test config")


def serve(
    config: SwitchyardConfig, scenario: Callable[[StandaloneServer], Awaitable[None]]
) -> None:
    async def main() -> None:
        server = StandaloneServer(config)
        await server.start()
        try:
            await scenario(server)
        finally:
            await server.stop()

    asyncio.run(main())


def caller_metadata() -> tuple[tuple[str, str], ...]:
    return (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))


async def finished_spans(
    exporter: InMemorySpanExporter, until: Callable[[Sequence[ReadableSpan]], bool]
) -> Sequence[ReadableSpan]:
    """The spans exported once `until` holds (shadows end after the answer)."""
    give_up_s = time.monotonic() + SHADOW_WAIT_S
    while not until(spans := exporter.get_finished_spans()):
        if time.monotonic() > give_up_s:
            raise AssertionError(f"spans never complete: {[s.name for s in spans]}")
        await asyncio.sleep(0.01)
    return spans


def only(spans: Sequence[ReadableSpan], name: str, parent: ReadableSpan | None) -> ReadableSpan:
    """The one span named `name` whose parent is `parent`."""
    parent_id = None if parent is None else parent.context.span_id
    found = [s for s in spans if s.name == name and s.parent and s.parent.span_id == parent_id]
    assert len(found) == 1, f"{name} under {parent_id}: {[(s.name, s.parent) for s in spans]}"
    return found[0]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[str]:
    return sorted(
        s.name for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id
    )


def assert_linked(compute: ReadableSpan, *requests: ReadableSpan) -> None:
    linked = {link.context.span_id for link in compute.links}
    assert linked == {request.context.span_id for request in requests}


def test_recommend_over_grpc_yields_the_span_tree_under_the_callers_span(
    demo_model_path: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()

    async def scenario(server: StandaloneServer) -> None:
        configure_tracing(TracingSettings(enabled=True), exporter)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            answer = await rec_grpc.RecommenderStub(channel).Recommend(
                rec.RecommendRequest(endpoint="recs", user_id="u1", candidate_ids=ITEMS, k=3),
                metadata=caller_metadata(),
                timeout=30,
            )
        assert len(answer.items) == 3
        # The shadow's span ends after its children, and after the answer.
        spans = await finished_spans(
            exporter, lambda spans: any(s.name == "routing.shadow" for s in spans)
        )
        request = _request_span(spans, GRPC_SPAN)
        assert request.kind is SpanKind.SERVER
        assert request.context.trace_id == CALLER_TRACE_ID
        assert request.parent is not None and request.parent.span_id == CALLER_SPAN_ID
        assert request.parent.is_remote
        assert children(spans, request) == [
            "batcher.compute",
            "batcher.queue_wait",
            "features.fetch",
            "routing.decide",
            "routing.shadow",
        ]
        assert_linked(only(spans, "batcher.compute", request), request)
        decision = only(spans, "routing.decide", request)
        assert decision.attributes is not None
        assert decision.attributes["switchyard.variant"] == "live"
        assert decision.attributes["switchyard.routing.shadows"] == 1
        fetch = only(spans, "features.fetch", request)
        assert fetch.attributes is not None
        assert fetch.attributes["switchyard.features.candidates"] == len(ITEMS)
        # The shadow's own model call nests under its span, in the caller's trace.
        shadow = only(spans, "routing.shadow", request)
        assert children(spans, shadow) == ["batcher.compute", "batcher.queue_wait"]
        assert_linked(only(spans, "batcher.compute", shadow), shadow)
        assert {s.context.trace_id for s in spans} == {CALLER_TRACE_ID}

    serve(gateway_config(demo_model_path, tmp_path), scenario)


def _request_span(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_model_infer_over_grpc_and_rest_calls_continue_the_callers_trace(
    demo_model_path: Path, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    features = np.ones((2, 16), np.float32)

    def rest_recommend(port: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = {"endpoint": "ranker", "user_id": "u1", "candidate_ids": ITEMS}
        connection.request("POST", "/v1/recommend", json.dumps(body), {"traceparent": TRACEPARENT})
        return connection.getresponse().status

    async def scenario(server: StandaloneServer) -> None:
        configure_tracing(TracingSettings(enabled=True), exporter)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            request = oip.ModelInferRequest(model_name="ranker")
            request.inputs.add(name="features", datatype="FP32", shape=features.shape)
            request.raw_input_contents.append(features.tobytes())
            await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, metadata=caller_metadata(), timeout=30
            )
        spans = await finished_spans(exporter, lambda spans: len(spans) >= 3)
        infer = _request_span(spans, INFER_SPAN)
        assert infer.parent is not None and infer.parent.span_id == CALLER_SPAN_ID
        assert infer.attributes is not None and infer.attributes["switchyard.model"] == "ranker"
        assert children(spans, infer) == ["batcher.compute", "batcher.queue_wait"]
        assert_linked(only(spans, "batcher.compute", infer), infer)

        exporter.clear()
        assert await asyncio.to_thread(rest_recommend, server.http_port) == 200
        spans = await finished_spans(exporter, lambda spans: len(spans) >= 4)
        rest = _request_span(spans, RECOMMEND_REST_SPAN)
        assert rest.parent is not None and rest.parent.span_id == CALLER_SPAN_ID
        # A model named directly: no routing decision.
        assert children(spans, rest) == ["batcher.compute", "batcher.queue_wait", "features.fetch"]

    serve(gateway_config(demo_model_path, tmp_path), scenario)


def test_a_batch_span_links_every_request_in_the_batch() -> None:
    class Doubling(Runtime):
        def load(self) -> ModelSignature:
            return ModelSignature("doubling", (), ())

        async def infer(
            self,
            inputs: Mapping[str, np.ndarray],
            output_names: Sequence[str],
            deadline_s: float | None = None,
        ) -> dict[str, np.ndarray]:
            return {"y": 2 * inputs["x"]}

    exporter = InMemorySpanExporter()
    configure_tracing(TracingSettings(enabled=True), exporter)

    async def main() -> None:
        # A long queue delay, and a preferred size of 3: the three requests form one batch.
        options = BatchingOptions(
            max_batch_size=8,
            max_queue_delay_us=5_000_000,
            max_queue_size=8,
            preferred_batch_sizes=(3,),
        )
        batcher = DynamicBatcher(Doubling(), options, ["y"], "doubling")
        await batcher.start()

        async def call(index: int) -> None:
            with tracing.span(f"caller-{index}"):
                await batcher.infer({"x": np.full((1, 2), index, np.float32)})

        await asyncio.gather(*(call(index) for index in range(3)))
        await batcher.close()

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    callers = [_request_span(spans, f"caller-{index}") for index in range(3)]
    (compute,) = [s for s in spans if s.name == "batcher.compute"]
    assert_linked(compute, *callers)
    assert compute.attributes is not None and compute.attributes["switchyard.batch.rows"] == 3
    # Its parent is the oldest request's span; each request waited in a span of its own.
    assert compute.parent is not None and compute.parent.span_id == callers[0].context.span_id
    for caller in callers:
        assert children(spans, caller)[-1] == "batcher.queue_wait"


class MetadataCapturingServer(oip_grpc.GRPCInferenceServiceServicer):
    """A gRPC model server that answers ModelInfer with its input and keeps each call's
    metadata."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def ModelInfer(
        self,
        request: oip.ModelInferRequest,
        context: grpc.aio.ServicerContext[oip.ModelInferRequest, oip.ModelInferResponse],
    ) -> oip.ModelInferResponse:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        output = oip.ModelInferResponse.InferOutputTensor(
            name="y", datatype="FP32", shape=request.inputs[0].shape
        )
        return oip.ModelInferResponse(
            outputs=[output], raw_output_contents=[request.raw_input_contents[0]]
        )


@pytest.mark.parametrize("enabled", [True, False])
def test_the_trace_context_reaches_the_model_servers_call_metadata(enabled: bool) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(TracingSettings(enabled=enabled), exporter)
    servicer = MetadataCapturingServer()

    async def main() -> None:
        server = grpc.aio.server()
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        model = TritonModel(TritonOptions(url=f"127.0.0.1:{port}", model_name="m"), "m")
        try:
            with tracing.request_span("caller", {"traceparent": TRACEPARENT}):
                outputs = await model.infer({"x": np.ones((1, 2), np.float32)}, ["y"])
            assert outputs["y"].tolist() == [[1.0, 1.0]]
        finally:
            await model.aclose()
            await server.stop(0)

    asyncio.run(main())
    (metadata,) = servicer.metadata
    if not enabled:
        assert "traceparent" not in metadata
        assert exporter.get_finished_spans() == ()
        return
    (caller,) = exporter.get_finished_spans()
    version, trace_id, span_id, flags = metadata["traceparent"].split("-")
    assert (version, flags) == ("00", "01")
    assert int(trace_id, 16) == CALLER_TRACE_ID
    assert int(span_id, 16) == caller.context.span_id


def test_tracing_off_makes_no_spans_and_sets_up_no_provider(
    demo_model_path: Path, tmp_path: Path
) -> None:
    async def scenario(server: StandaloneServer) -> None:
        assert not tracing.tracing_enabled()
        assert tracing_setup._provider is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            answer = await rec_grpc.RecommenderStub(channel).Recommend(
                rec.RecommendRequest(endpoint="recs", user_id="u1", candidate_ids=ITEMS),
                metadata=caller_metadata(),
                timeout=30,
            )
        assert len(answer.items) == len(ITEMS)
        assert tracing.current_span_context() is None
        assert tracing.outgoing_headers() == {}

    serve(gateway_config(demo_model_path, tmp_path), scenario)
    # Nor is the tracing SDK imported at all by a gateway whose tracing is off. (redis-py
    # imports the metrics SDK, opentelemetry.sdk.metrics, when it is installed: not ours.)
    script = (
        "import sys\n"
        "from switchyard.server.app import StandaloneServer\n"
        "from switchyard.server.tracing import TracingSettings, configure_tracing\n"
        "assert configure_tracing(TracingSettings()) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk.trace')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_spans_are_exported_over_otlp_http_to_the_configured_endpoint() -> None:
    with OtlpReceiver() as receiver:
        settings = TracingSettings(
            enabled=True, otlp_endpoint=receiver.endpoint, service_name="gw-test"
        )
        assert configure_tracing(settings) is not None
        with tracing.request_span("exported", {"traceparent": TRACEPARENT}):
            pass
        shutdown_tracing()  # flushes the batch
    (resource_spans,) = receiver.resource_spans()
    attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert attributes["service.name"] == "gw-test"
    (span,) = receiver.spans()
    assert span.name == "exported"
    assert span.parent_span_id == CALLER_SPAN_ID.to_bytes(8, "big")


def test_unsampled_callers_and_a_zero_ratio_record_nothing() -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(TracingSettings(enabled=True, sampling_ratio=0.0), exporter)
    with tracing.request_span("root", {}):
        pass
    unsampled = TRACEPARENT[:-2] + "00"
    with tracing.request_span("unsampled", {"traceparent": unsampled}):
        assert tracing.outgoing_headers()["traceparent"].endswith("-00")  # passed on as is
    with tracing.request_span("sampled", {"traceparent": TRACEPARENT}):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["sampled"]


def test_bad_settings_are_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match="sampling_ratio"):
        TracingSettings(sampling_ratio=1.5)


def test_enabled_without_the_exporter_package_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(tracing_setup.TracingSetupError, match=r"switchyard\[tracing\]"):
        configure_tracing(TracingSettings(enabled=True))
    assert not tracing.tracing_enabled()
