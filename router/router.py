"""The router: holds the current routing table and turns requests into routing decisions."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from switchyard.router.decision import PrimaryPolicy, RouteRequest, RoutingDecision
from switchyard.router.hints import read_route_request
from switchyard.router.override import OverridePolicy
from switchyard.router.random_split import RandomPolicy
from switchyard.router.shadow import ShadowPolicy
from switchyard.router.shadow_gate import ShadowGate
from switchyard.router.sticky import StickyPolicy
from switchyard.router.table import RoutingTable


class Router:
    """Routes requests on the current table; `swap` replaces the table in one assignment.

    A request reads `self._table` once and decides on that snapshot throughout, so a swap
    mid-request changes nothing for it. Primary policies are asked in order until one
    chooses: override, then sticky (keyed), then random.
    """

    def __init__(
        self,
        table: RoutingTable,
        *,
        rng: random.Random | None = None,
        policies: Sequence[PrimaryPolicy] | None = None,
        shadow_policy: ShadowPolicy | None = None,
    ) -> None:
        self._table = table
        rng = rng or random.Random()
        self._policies: tuple[PrimaryPolicy, ...] = tuple(
            policies or (OverridePolicy(), StickyPolicy(), RandomPolicy(rng))
        )
        self._shadow_policy = shadow_policy or ShadowPolicy(rng)
        # Gates outlive table swaps: in-flight shadows keep counting against their endpoint.
        self._gates: dict[str, ShadowGate] = {}

    @property
    def table(self) -> RoutingTable:
        return self._table

    def swap(self, table: RoutingTable) -> RoutingTable:
        """Serve `table` from now on; returns the table it replaces (for the audit log)."""
        old, self._table = self._table, table
        return old

    def route(
        self,
        endpoint: str,
        *,
        parameters: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        routing_key: str | None = None,
    ) -> RoutingDecision:
        """Read the request's hints and decide; NotFound / InvalidArgument for bad input.
        `routing_key`: a key the caller holds, in place of the request's (read_route_request)."""
        table = self._table
        request = read_route_request(table.endpoint(endpoint), parameters, headers, routing_key)
        return self._decide(table, request)

    def decide(self, request: RouteRequest) -> RoutingDecision:
        """Decide for hints already read."""
        return self._decide(self._table, request)

    def shadow_gate(self, endpoint: str) -> ShadowGate:
        """The endpoint's shadow gate, its cap kept in step with the current table."""
        spec = self._table.endpoint(endpoint)
        limit = spec.shadow.max_concurrency if spec.shadow else 1
        gate = self._gates.get(endpoint)
        if gate is None:
            gate = self._gates[endpoint] = ShadowGate(limit)
        elif gate.limit != limit:
            gate.limit = limit
        return gate

    def _decide(self, table: RoutingTable, request: RouteRequest) -> RoutingDecision:
        spec = table.endpoint(request.endpoint)
        for policy in self._policies:
            choice = policy.choose(spec, request)
            if choice is not None:
                return RoutingDecision(
                    endpoint=spec.name,
                    primary=spec.variants[choice.variant],
                    reason=choice.reason,
                    shadows=self._shadow_policy.choose(spec, request, choice.variant),
                )
        raise RuntimeError(f"no routing policy chose a variant for endpoint '{spec.name}'")
