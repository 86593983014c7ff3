"""The Recommend API over gRPC (switchyard.recommend.v1.Recommender) and REST (/v1/recommend)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from switchyard.protos import recommend_pb2 as pb
from switchyard.protos import recommend_pb2_grpc as pb_grpc
from switchyard.runtimes import tracing
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.feedback import (
    REQUEST_ID_HEADER,
    FeedbackLog,
    FeedbackRequest,
    FeedbackResult,
    check_feedback,
)
from switchyard.server.grpc_ingress import CallContext, maps_errors, text_metadata
from switchyard.server.json_body import field, parse_object
from switchyard.server.metrics import ServerMetrics
from switchyard.server.recommend import Recommender, RecommendRequest, RecommendResponse

REST_PATH = "/v1/recommend"
GRPC_SPAN = "switchyard.recommend.v1.Recommender/Recommend"  # OpenTelemetry's rpc span name
RECOMMEND_REST_SPAN = f"POST {REST_PATH}"


class RecommendServicer(pb_grpc.RecommenderServicer):
    def __init__(
        self,
        recommender: Recommender,
        metrics: ServerMetrics,
        model_label: Callable[[str], str],
        feedback: FeedbackLog | None = None,
    ) -> None:
        self._feedback = feedback
        self._recommender = recommender
        self._metrics = metrics
        self._model_label = model_label

    @maps_errors
    async def Recommend(
        self, request: pb.RecommendRequest, context: CallContext
    ) -> pb.RecommendResponse:
        headers = text_metadata(context)
        with (
            self._metrics.track("grpc", self._model_label) as labels,
            tracing.request_span(GRPC_SPAN, headers, {"switchyard.model": request.endpoint}),
        ):
            labels.model = request.endpoint
            remaining_s = context.time_remaining()
            response = await self._recommender.recommend(
                RecommendRequest(
                    endpoint=request.endpoint,
                    user_id=request.user_id,
                    candidate_ids=list(request.candidate_ids),
                    k=request.k,
                    context=dict(request.context),
                    request_id=request.request_id or headers.get(REQUEST_ID_HEADER, ""),
                    headers=headers,
                    deadline_s=None if remaining_s is None else time.monotonic() + remaining_s,
                )
            )
            labels.version = response.model_version
            context.set_trailing_metadata(((REQUEST_ID_HEADER, response.request_id),))
            return pb.RecommendResponse(
                items=[pb.ScoredItem(item_id=i.item_id, score=i.score) for i in response.items],
                endpoint=response.endpoint,
                variant=response.variant,
                model_name=response.model_name,
                model_version=response.model_version,
                features_degraded=response.features_degraded,
                request_id=response.request_id,
            )

    @maps_errors
    async def Feedback(
        self, request: pb.FeedbackRequest, context: CallContext
    ) -> pb.FeedbackResponse:
        which = request.WhichOneof("outcome")
        try:
            feedback = check_feedback(
                FeedbackRequest(
                    request_id=request.request_id,
                    clicked_item_ids=tuple(request.clicked.item_ids)
                    if which == "clicked"
                    else None,
                    labels=dict(request.labels.labels) if which == "labels" else None,
                    timestamp_s=request.timestamp_s or None,
                )
            )
        except InvalidArgument:
            if self._feedback is not None:
                self._feedback.count_invalid()
            raise
        result = await join_feedback(self._feedback, feedback)
        return pb.FeedbackResponse(
            joined=result.joined,
            reason=result.reason,
            labelled_items=result.labelled,
            ignored_items=result.ignored,
        )


async def join_feedback(
    feedback_log: FeedbackLog | None, feedback: FeedbackRequest
) -> FeedbackResult:
    if feedback_log is None or not feedback_log.enabled:
        return FeedbackResult(False, "unknown_request")
    return await feedback_log.join(feedback)


def parse_recommend_json(body: bytes, headers: dict[str, str]) -> RecommendRequest:
    """The REST body: {"endpoint", "user_id", "candidate_ids", "k"?, "context"?,
    "request_id"?, "timeout_ms"?}."""
    document = parse_object(body)
    known = {"endpoint", "user_id", "candidate_ids", "k", "context", "request_id", "timeout_ms"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise InvalidArgument(f"unknown fields {client_text(unknown)}; known: {sorted(known)}")
    candidates = field(document, "candidate_ids", list, "request", [])
    context = field(document, "context", dict, "request", {})
    if not all(isinstance(c, str) for c in candidates):
        raise InvalidArgument("'candidate_ids' must be a list of strings")
    if not all(isinstance(v, str) for v in context.values()):
        raise InvalidArgument("'context' values must be strings")
    timeout_ms = field(document, "timeout_ms", (int, float), "request", 0)
    return RecommendRequest(
        endpoint=field(document, "endpoint", str, "request", ""),
        user_id=field(document, "user_id", str, "request", ""),
        candidate_ids=candidates,
        k=field(document, "k", int, "request", 0),
        context=context,
        request_id=field(document, "request_id", str, "request", "")
        or headers.get(REQUEST_ID_HEADER, ""),
        headers=headers,
        deadline_s=time.monotonic() + timeout_ms / 1e3 if timeout_ms > 0 else None,
    )


def recommend_json(response: RecommendResponse) -> dict[str, Any]:
    return {
        "items": [{"item_id": i.item_id, "score": i.score} for i in response.items],
        "endpoint": response.endpoint,
        "variant": response.variant,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "features_degraded": response.features_degraded,
        "request_id": response.request_id,
    }
