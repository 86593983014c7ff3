"""Endpoints on the serving path: route each request, mirror shadows, drive rollouts.

Wraps the pure router (router/) with what needs the event loop and the models: running the
chosen variant, mirroring to shadow variants in the background and comparing their answers,
judging progressive rollouts on a supervised timer, and swapping the routing table
atomically with an audit line for every change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from switchyard.router.audit import describe_changes
from switchyard.router.comparison import Comparison, compare_outputs
from switchyard.router.decision import RoutingDecision
from switchyard.router.disagreement_log import Disagreement, DisagreementLog
from switchyard.router.endpoint import VariantTarget
from switchyard.router.rollout import RolloutController, RolloutEvent, RolloutState
from switchyard.router.router import Router
from switchyard.router.shadow_launcher import ShadowLauncher
from switchyard.router.table import RoutingTable
from switchyard.runtimes.errors import InvalidArgument, NotFound, SwitchyardError
from switchyard.server.audit_log import AuditLog
from switchyard.server.config import RoutingSettings
from switchyard.server.metrics import RoutingMetrics
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
    """Errors that say nothing about a variant's health (bad input, unknown names)."""
    return isinstance(error, InvalidArgument | NotFound)


def as_ranking(array: np.ndarray) -> np.ndarray:
    """Scores of N candidates come as [N, 1] (one row per candidate); compare them as one
    ranking over the candidates, [1, N], so argmax and top-k mean "best items"."""
    return array.reshape(1, -1) if array.ndim == 2 and array.shape[1] == 1 else array


class RoutingService:
    def __init__(
        self,
        table: RoutingTable,
        call_model: ModelCall,
        settings: RoutingSettings,
        metrics: RoutingMetrics,
        audit: AuditLog,
    ) -> None:
        self._router = Router(table)
        self._call_model = call_model
        self._settings = settings
        self._metrics = metrics
        self._audit = audit
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
        self._rollouts: dict[str, RolloutController] = {}
        self._sync_rollouts(table)
        self._ticker: asyncio.Task[None] | None = None

    # Table -----------------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        return self._router.table

    def apply(self, table: RoutingTable, actor: str, action: str) -> list[str]:
        """Serve `table` from now on (one assignment: in-flight requests keep their
        snapshot) and audit the change; returns the changed lines."""
        old = self._router.swap(table)
        changes = describe_changes(old, table)
        self._sync_rollouts(table)
        self._metrics.table_changes.labels(actor).inc()
        self._audit.record(actor, action, changes)
        return changes

    def reload(self, table: RoutingTable, action: str) -> list[str]:
        """Apply a table read from the config file. A running rollout keeps the weights it
        set (its plan unchanged), so an unrelated edit does not reset its progress."""
        for name, controller in self._rollouts.items():
            spec = table.endpoints.get(name)
            if (
                controller.state is RolloutState.RUNNING
                and spec
                and spec.rollout == controller.plan
            ):
                table = table.with_weights(name, controller.weights())
        if not describe_changes(self.table, table):
            return []
        return self.apply(table, "config-file", action)

    def set_weights(self, endpoint: str, weights: Mapping[str, float], actor: str) -> list[str]:
        controller = self._rollouts.get(endpoint)
        if controller is not None and controller.state is RolloutState.RUNNING:
            raise InvalidArgument(
                f"endpoint '{endpoint}' is under a running rollout, which owns its weights; "
                "abort or promote the rollout first"
            )
        return self.apply(self.table.with_weights(endpoint, weights), actor, "set weights")

    # Rollouts --------------------------------------------------------------------------

    def rollout(self, endpoint: str) -> RolloutController:
        self.table.endpoint(endpoint)  # NotFound for unknown endpoints
        controller = self._rollouts.get(endpoint)
        if controller is None:
            raise NotFound(f"endpoint '{endpoint}' has no rollout plan in its configuration")
        return controller

    def rollout_states(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "state": str(c.state),
                "canary_percent": c.percent,
                "step": c.step_index,
                "stable": c.stable_variant,
                "canary": c.plan.canary,
            }
            for name, c in self._rollouts.items()
        }

    def _sync_rollouts(self, table: RoutingTable) -> None:
        """A controller per endpoint with a plan; kept while its plan stays the same."""
        for name, spec in table.endpoints.items():
            current = self._rollouts.get(name)
            if spec.rollout is None:
                self._rollouts.pop(name, None)
            elif current is None or current.plan != spec.rollout:
                controller = RolloutController(name, spec.rollout)
                controller.subscribe(self._on_rollout_event)
                self._rollouts[name] = controller
        for name in set(self._rollouts) - set(table.endpoints):
            del self._rollouts[name]

    def _on_rollout_event(self, event: RolloutEvent) -> None:
        log.info(
            "rollout of %s: %s -> %s, canary %s%% -> %s%% (%s)",
            event.endpoint, event.from_state, event.to_state,
            event.from_percent, event.to_percent, event.reason,
        )  # fmt: skip
        self._metrics.rollout_events.labels(event.endpoint, str(event.to_state)).inc()
        self._metrics.rollout_canary_percent.labels(event.endpoint).set(event.to_percent)
        table = self.table.with_weights(event.endpoint, event.weights)
        self.apply(table, "rollout", f"rollout {event.to_state}: {event.reason}")

    async def _tick_rollouts_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.rollout_tick_s)
            for controller in list(self._rollouts.values()):
                try:
                    controller.tick()
                except Exception:  # a broken rollout must stop neither the loop nor the others
                    log.exception("rollout tick failed for %s", controller.endpoint)

    # Serving ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest, routing_key: str | None = None) -> InferResponse:
        """Route a request naming an endpoint. `routing_key`, when given, is its sticky key
        (Recommend's user id) in place of the one the request carries."""
        decision = self._router.route(
            request.model_name,
            parameters=request.parameters,
            headers=request.headers,
            routing_key=routing_key,
        )
        primary = decision.primary
        started_s = time.perf_counter()
        controller = self._rollouts.get(decision.endpoint)
        try:
            response = await self._call_model(_for_variant(request, primary))
        except SwitchyardError as exc:
            if controller is not None and not _caller_fault(exc):
                controller.record(primary.name, time.perf_counter() - started_s, ok=False)
            raise
        latency_s = time.perf_counter() - started_s
        if controller is not None:
            controller.record(primary.name, latency_s, ok=True)
        self._metrics.routed.labels(decision.endpoint, primary.name, str(decision.reason)).inc()
        if decision.shadows:
            outputs = {output.name: output.data for output in response.outputs}
            for shadow in decision.shadows:
                self._mirror(decision, shadow, request, outputs, latency_s)
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
    ) -> None:
        counter = self._metrics.shadow_requests
        work = self._shadow(decision, shadow, request, primary_outputs, primary_latency_s)
        admission = self._launcher.launch(
            work,
            self._router.shadow_gate(decision.endpoint),
            name=f"{decision.endpoint}/{shadow.name}",
        )
        if not admission.admitted:
            counter.labels(decision.endpoint, shadow.name, f"dropped_{admission}").inc()

    async def _shadow(
        self,
        decision: RoutingDecision,
        shadow: VariantTarget,
        request: InferRequest,
        primary_outputs: Mapping[str, np.ndarray],
        primary_latency_s: float,
    ) -> None:
        labels = (decision.endpoint, shadow.name)
        started_s = time.perf_counter()
        try:
            response = await self._call_model(_for_variant(request, shadow, deadline=False))
        except Exception:
            self._metrics.shadow_requests.labels(*labels, "error").inc()
            raise  # the launcher logs it; the caller never sees it
        comparison = compare_outputs(
            {name: as_ranking(array) for name, array in primary_outputs.items()},
            {output.name: as_ranking(output.data) for output in response.outputs},
            primary_latency_s=primary_latency_s,
            shadow_latency_s=time.perf_counter() - started_s,
            top_k=TOP_K,
        )
        self._metrics.shadow_requests.labels(*labels, "ok").inc()
        self._observe(labels, comparison)
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

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_rollouts_forever(), name="rollout-ticker")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self._launcher.close()
        if self._disagreements is not None:
            self._disagreements.close()


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
