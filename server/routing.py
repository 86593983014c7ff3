"""Endpoints on the serving path: route each request, run its variant, mirror shadows.

Wraps the pure router (router/) with what needs the event loop and the models: running the
chosen variant, and mirroring to shadow variants in the background and comparing their
answers. The table the router decides on is the control plane's (server/control/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from switchyard.router.comparison import Comparison, compare_outputs
from switchyard.router.decision import RoutingDecision
from switchyard.router.disagreement_log import Disagreement, DisagreementLog
from switchyard.router.endpoint import VariantTarget
from switchyard.router.router import Router
from switchyard.router.shadow_launcher import ShadowLauncher
from switchyard.router.table import RoutingTable
from switchyard.runtimes import tracing
from switchyard.runtimes.errors import InvalidArgument
from switchyard.server.config import RoutingSettings
from switchyard.server.drift import DriftService
from switchyard.server.metrics import RoutingMetrics, status_code
from switchyard.server.types import InferRequest, InferResponse

log = logging.getLogger(__name__)

# Response parameters (and REST headers / gRPC trailing metadata) that say who answered.
ENDPOINT_PARAMETER = "switchyard_endpoint"
VARIANT_PARAMETER = "switchyard_variant"
VARIANT_HEADER = "x-switchyard-variant"
TOP_K = 10  # items compared between shadow and primary rankings

# Runs one concrete model version on a request: the data plane's direct path, given at
# construction (the routing service never sees the entry point that calls it).
ModelCall = Callable[[InferRequest], Awaitable[InferResponse]]


def _caller_fault(error: BaseException) -> bool:
    """Errors that say nothing about the chosen variant's health: bad input. (The endpoint
    was found, so a NotFound from here on is the variant's: its model is not loaded.)"""
    return isinstance(error, InvalidArgument)


def as_ranking(array: np.ndarray) -> np.ndarray:
    """Scores of N candidates come as [N, 1] (one row per candidate); compare them as one
    ranking over the candidates, [1, N], so argmax and top-k mean "best items"."""
    return array.reshape(1, -1) if array.ndim == 2 and array.shape[1] == 1 else array


# Told of every request an endpoint's variant served: (endpoint, variant, latency_s, ok).
OutcomeObserver = Callable[[str, str, float, bool], None]


class RoutingService:
    """Serves endpoints on the router's current table; the control plane (server/control/)
    keeps that table and is told each primary outcome, for the rollouts it judges."""

    def __init__(
        self,
        router: Router,
        call_model: ModelCall,
        settings: RoutingSettings,
        metrics: RoutingMetrics,
        observe_outcome: OutcomeObserver,
        drift: DriftService | None = None,
    ) -> None:
        self._router = router
        self._drift = drift
        self._call_model = call_model
        self._metrics = metrics
        self._observe_outcome = observe_outcome
        self._launcher = ShadowLauncher(timeout_s=settings.shadow_timeout_s)
        self._disagreements = (
            DisagreementLog(
                settings.disagreement_log_path,
                top_n=settings.disagreement_top_n,
                window_s=settings.disagreement_window_s,
            )
            if settings.disagreement_log_path
            else None
        )

    @property
    def table(self) -> RoutingTable:
        return self._router.table

    # Serving ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest, routing_key: str | None = None) -> InferResponse:
        """Route a request naming an endpoint. `routing_key`, when given, is its sticky key
        (Recommend's user id) in place of the one the request carries."""
        with tracing.span("routing.decide", {"switchyard.endpoint": request.model_name}) as span:
            decision = self._router.route(
                request.model_name,
                parameters=request.parameters,
                headers=request.headers,
                routing_key=routing_key,
            )
            if span is not None:
                span.set_attributes(_decision_attributes(decision))
        primary = decision.primary
        routed = (decision.endpoint, primary.name, str(decision.reason))
        started_s = time.perf_counter()
        try:
            response = await self._call_model(_for_variant(request, primary))
        except BaseException as exc:  # counted per variant, whatever it was, then passed on
            self._metrics.routed.labels(*routed, status_code(exc)).inc()
            # A client gone (cancelled) or bad input says nothing of the variant's health.
            if isinstance(exc, Exception) and not _caller_fault(exc):
                latency_s = time.perf_counter() - started_s
                self._observe_outcome(decision.endpoint, primary.name, latency_s, False)
            raise
        latency_s = time.perf_counter() - started_s
        self._observe_outcome(decision.endpoint, primary.name, latency_s, True)
        self._metrics.routed.labels(*routed, status_code(None)).inc()
        if decision.shadows:
            outputs = {output.name: output.data for output in response.outputs}
            primary_version = (response.model_name, response.model_version)
            for shadow in decision.shadows:
                self._mirror(decision, shadow, request, outputs, latency_s, primary_version)
        response.parameters[ENDPOINT_PARAMETER] = decision.endpoint
        response.parameters[VARIANT_PARAMETER] = primary.name
        return response

    def _mirror(
        self,
        decision: RoutingDecision,
        shadow: VariantTarget,
        request: InferRequest,
        primary_outputs: Mapping[str, np.ndarray],
        primary_latency_s: float,
        primary_version: tuple[str, str],
    ) -> None:
        counter = self._metrics.shadow_requests
        labels = (decision.endpoint, shadow.name)
        work = self._shadow(
            decision, shadow, request, primary_outputs, primary_latency_s, primary_version
        )
        admission = self._launcher.launch(
            work,
            self._router.shadow_gate(decision.endpoint),
            name=f"{decision.endpoint}/{shadow.name}",
            # Counted when it ends, by the launcher that saw how: a timed-out or cancelled
            # shadow never gets to count itself.
            on_outcome=lambda outcome: counter.labels(*labels, str(outcome)).inc(),
        )
        if not admission.admitted:
            counter.labels(*labels, f"dropped_{admission}").inc()

    async def _shadow(
        self,
        decision: RoutingDecision,
        shadow: VariantTarget,
        request: InferRequest,
        primary_outputs: Mapping[str, np.ndarray],
        primary_latency_s: float,
        primary_version: tuple[str, str],
    ) -> None:
        labels = (decision.endpoint, shadow.name)
        started_s = time.perf_counter()
        # A failure goes to the launcher, which logs and counts it; the caller never sees it.
        # The span's parent is the request's: the launcher's task copied its context.
        with tracing.span("routing.shadow", {"switchyard.variant": shadow.name}):
            response = await self._call_model(_for_variant(request, shadow, deadline=False))
        comparison = compare_outputs(
            {name: as_ranking(array) for name, array in primary_outputs.items()},
            {output.name: as_ranking(output.data) for output in response.outputs},
            primary_latency_s=primary_latency_s,
            shadow_latency_s=time.perf_counter() - started_s,
            top_k=TOP_K,
        )
        self._observe(labels, comparison)
        if self._drift is not None:  # score distributions, beside the per-request agreement
            shadow_outputs = {output.name: output.data for output in response.outputs}
            self._drift.observe_shadow(*labels, primary_version, primary_outputs, shadow_outputs)
        if self._disagreements is not None:
            self._disagreements.offer(
                Disagreement(
                    decision.endpoint, decision.primary, shadow, request.id or None, comparison
                )
            )

    def _observe(self, labels: tuple[str, str], comparison: Comparison) -> None:
        metrics = self._metrics
        metrics.shadow_max_abs_diff.labels(*labels).observe(comparison.max_abs_diff)
        metrics.shadow_latency_delta_s.labels(*labels).observe(comparison.latency_delta_s)
        if comparison.argmax_agreement is not None:
            metrics.shadow_argmax_agreement.labels(*labels).observe(comparison.argmax_agreement)
        if comparison.top_k_overlap is not None:
            metrics.shadow_top_k_overlap.labels(*labels).observe(comparison.top_k_overlap)

    # Lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        await self._launcher.close()
        if self._disagreements is not None:
            self._disagreements.close()


def _decision_attributes(decision: RoutingDecision) -> dict[str, str | int]:
    return {
        "switchyard.variant": decision.primary.name,
        "switchyard.routing.reason": str(decision.reason),
        "switchyard.routing.shadows": len(decision.shadows),
    }


def _for_variant(
    request: InferRequest, target: VariantTarget, deadline: bool = True
) -> InferRequest:
    """The request re-addressed to the variant's model version (shadows get no deadline:
    they are bounded by the shadow timeout instead)."""
    return InferRequest(
        model_name=target.model,
        model_version=target.version or "",
        id=request.id,
        inputs=request.inputs,
        output_names=request.output_names,
        parameters=request.parameters,
        headers=request.headers,
        deadline_s=request.deadline_s if deadline else None,
    )
