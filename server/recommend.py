"""The Recommend pipeline: ids in, ranked items out, transport-neutral.

One request: check the ids, fetch the user's and the candidates' features in one store
round trip, run the model through the inference entry point (routed and sticky on the user when
the name is an endpoint, batched like any inference), and rank the candidates by score.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from switchyard.runtimes import tracing
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, NotFound, UnknownOutput
from switchyard.server.config import RecommendSettings
from switchyard.server.features.definitions import FeatureDefinitions, RowLayout
from switchyard.server.features.store import FeatureStore
from switchyard.server.feedback import FeedbackLog, check_request_id, new_request_id
from switchyard.server.inference import InferenceService, ModelVersionTarget
from switchyard.server.predictions import ScoredItem
from switchyard.server.routing import VARIANT_PARAMETER
from switchyard.server.types import InferInput, InferRequest, ParameterValue

USER_ENTITY = "user"


class RecommendConfigError(RuntimeError):
    """The config does not fit the model that ranks (its score output): a fault of the
    server, not of the caller. Deliberately not a SwitchyardError: the caller sees the
    generic internal error, and the ingress logs this message, which names the key to fix."""


@dataclass(slots=True)
class RecommendRequest:
    endpoint: str
    user_id: str
    candidate_ids: list[str]
    k: int = 0  # 0: every candidate, ranked
    context: dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline_s: float | None = None


@dataclass(slots=True)
class RecommendResponse:
    items: list[ScoredItem]
    endpoint: str
    variant: str
    model_name: str
    model_version: str
    features_degraded: bool
    request_id: str


class Recommender:
    def __init__(
        self,
        inference: InferenceService,
        definitions: FeatureDefinitions,
        store: FeatureStore,
        settings: RecommendSettings,
        feedback: FeedbackLog | None = None,
    ) -> None:
        self._inference = inference
        self._definitions = definitions
        self._store = store
        self._settings = settings
        self._feedback = feedback if feedback is not None and feedback.enabled else None

    def _check(self, request: RecommendRequest) -> None:
        if not request.endpoint:
            raise InvalidArgument("endpoint is required: the endpoint or model that ranks")
        if not request.user_id:
            raise InvalidArgument("user_id is required")
        count = len(request.candidate_ids)
        if count == 0:
            raise InvalidArgument("candidate_ids is empty: give at least one item to rank")
        if count > self._settings.max_candidates:
            raise InvalidArgument(
                f"{count} candidates is over the maximum of {self._settings.max_candidates} "
                "per request; split the request"
            )
        if len(set(request.candidate_ids)) != count:
            repeated = [c for c, n in Counter(request.candidate_ids).items() if n > 1]
            raise InvalidArgument(f"candidate_ids repeat: {client_text(sorted(repeated)[:10])}")
        if any(not item for item in request.candidate_ids):
            raise InvalidArgument("candidate_ids contains an empty id")
        if request.k < 0:
            raise InvalidArgument(f"k must be >= 0 (0 returns every candidate), got {request.k}")
        if request.request_id:
            check_request_id(request.request_id)

    def _layout(self, name: str) -> RowLayout:
        """The feature layout of the model or endpoint: its own, or its variants' one."""
        layouts = self._definitions.layouts
        if name in layouts:
            return layouts[name]
        target = self._inference.resolve(name)  # NotFound for names we do not serve
        if isinstance(target, ModelVersionTarget):
            raise NotFound(f"model '{name}' has no feature inputs (features.inputs.{name})")
        found = {id(layouts[m]): layouts[m] for m in target.models if m in layouts}
        if len(found) != 1:
            raise NotFound(
                f"endpoint '{name}' needs one feature layout: add features.inputs.{name} "
                f"(its models {list(target.models)} have {len(found)})"
            )
        return next(iter(found.values()))

    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        self._check(request)
        if not request.request_id:
            request.request_id = new_request_id()  # feedback joins on it
        layout = self._layout(request.endpoint)
        context_ids = {}
        for part in layout.context:
            name = part.entity.name
            entity_id = request.user_id if name == USER_ENTITY else request.context.get(name)
            if not entity_id:
                raise InvalidArgument(f"context['{name}'] is required by this model's features")
            context_ids[name] = entity_id
        with tracing.span(
            "features.fetch", {"switchyard.features.candidates": len(request.candidate_ids)}
        ) as fetch_span:
            batch = await self._store.fetch(layout, context_ids, request.candidate_ids)
            if fetch_span is not None:
                fetch_span.set_attribute("switchyard.features.degraded", batch.degraded)
        parameters: dict[str, ParameterValue] = dict(request.context)
        infer = InferRequest(
            model_name=request.endpoint,
            inputs=[InferInput(layout.tensor, "FP32", batch.matrix.shape, batch.matrix)],
            id=request.request_id,
            output_names=[self._settings.score_output],
            parameters=parameters,
            headers=request.headers,
            deadline_s=request.deadline_s,
        )
        # Sticky by the user: on an endpoint the user id is the routing key.
        try:
            response = await self._inference.infer(infer, routing_key=request.user_id)
        except UnknownOutput as exc:
            raise RecommendConfigError(
                f"recommend.score_output is '{self._settings.score_output}', but the model "
                f"serving '{request.endpoint}' has no such output ({exc}); set it to the "
                "output that holds the scores"
            ) from None
        scores = np.asarray(response.outputs[0].data, dtype=np.float32).reshape(-1)
        if scores.size != len(request.candidate_ids):
            raise RecommendConfigError(
                f"recommend.score_output '{self._settings.score_output}' of model "
                f"'{response.model_name}' has {scores.size} values for "
                f"{len(request.candidate_ids)} candidates; it must hold one score per row"
            )
        k = request.k or len(request.candidate_ids)
        order = np.argsort(-scores, kind="stable")[:k]  # ties keep the caller's order
        items = [ScoredItem(request.candidate_ids[i], float(scores[i])) for i in order]
        variant = str(response.parameters.get(VARIANT_PARAMETER, ""))
        if self._feedback is not None:
            self._feedback.record(
                request.request_id,
                request.endpoint,
                variant,
                response.model_version,
                items,  # the response's own list: no copies on the request path
                request.k,
            )
        return RecommendResponse(
            items=items,
            endpoint=request.endpoint,
            variant=variant,
            model_name=response.model_name,
            model_version=response.model_version,
            features_degraded=batch.degraded,
            request_id=request.request_id,
        )
