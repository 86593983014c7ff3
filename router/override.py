"""Override policy: a variant named by the caller wins, where the endpoint allows it."""

from __future__ import annotations

from switchyard.router.decision import Choice, RouteReason, RouteRequest
from switchyard.router.endpoint import EndpointSpec
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument


class OverridePolicy:
    def choose(self, endpoint: EndpointSpec, request: RouteRequest) -> Choice | None:
        """The named variant; InvalidArgument if overrides are off or the name is unknown.

        Any declared variant may be named, including zero-weight and shadow-only ones, so a
        canary can be tried by hand before it takes traffic.
        """
        name = request.override_variant
        if name is None:
            return None
        if not endpoint.override.allowed:
            raise InvalidArgument(
                f"endpoint '{endpoint.name}' does not allow choosing a variant "
                f"(the request named '{client_text(name)}'); send the request without a variant"
            )
        if name not in endpoint.variants:
            valid = ", ".join(sorted(endpoint.variants))
            raise InvalidArgument(
                f"endpoint '{endpoint.name}' has no variant '{client_text(name)}' "
                f"(valid variants: {valid})"
            )
        return Choice(name, RouteReason.OVERRIDE)
