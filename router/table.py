"""The routing table: an immutable snapshot of every endpoint's spec.

Changes build a new table; the router swaps its reference in one assignment, so a request
that already took the old snapshot finishes on it and a config change never fails it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from switchyard.router.endpoint import EndpointSpec
from switchyard.router.errors import RoutingConfigError
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import NotFound


@dataclass(frozen=True, slots=True)
class RoutingTable:
    endpoints: Mapping[str, EndpointSpec]

    def __post_init__(self) -> None:
        for name, spec in self.endpoints.items():
            if name != spec.name:
                raise RoutingConfigError(f"endpoints.{name}", f"holds endpoint '{spec.name}'")
        object.__setattr__(self, "endpoints", MappingProxyType(dict(self.endpoints)))

    @classmethod
    def of(cls, specs: Iterable[EndpointSpec]) -> RoutingTable:
        """A table of `specs`; RoutingConfigError if two share a name."""
        endpoints: dict[str, EndpointSpec] = {}
        for spec in specs:
            if spec.name in endpoints:
                raise RoutingConfigError(f"endpoints.{spec.name}", "endpoint name repeats")
            endpoints[spec.name] = spec
        return cls(endpoints)

    def endpoint(self, name: str) -> EndpointSpec:
        """The named endpoint; NotFound naming the known ones if there is none."""
        try:
            return self.endpoints[name]
        except KeyError:
            known = ", ".join(sorted(self.endpoints)) or "none"
            raise NotFound(
                f"endpoint '{client_text(name)}' does not exist (endpoints: {known})"
            ) from None

    def with_weights(self, endpoint: str, weights: Mapping[str, float]) -> RoutingTable:
        """A new table in which `endpoint` has exactly `weights` (unlisted variants get 0).

        NotFound for an unknown endpoint; RoutingConfigError (an InvalidArgument) naming the
        offending weight otherwise. This table is unchanged.
        """
        spec = self.endpoint(endpoint)
        try:
            updated = dataclasses.replace(spec, weights=dict(weights))
        except RoutingConfigError as exc:
            raise exc.within(f"endpoints.{endpoint}") from None
        return self.with_endpoint(updated)

    def with_endpoint(self, spec: EndpointSpec) -> RoutingTable:
        """A new table with `spec` added, or replacing the endpoint of the same name."""
        return RoutingTable({**self.endpoints, spec.name: spec})
