"""Reading a request's routing hints (routing key, variant override) from where it carries them.

The endpoint says where: a request parameter (OIP `parameters`, which the REST and gRPC
ingresses both decode to a mapping) or a header (HTTP header or gRPC metadata). The parameter
wins when both are present. An empty value counts as absent.
"""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.router.decision import RouteRequest
from switchyard.router.endpoint import EndpointSpec
from switchyard.runtimes.errors import InvalidArgument


def read_route_request(
    endpoint: EndpointSpec,
    parameters: Mapping[str, object] | None = None,
    headers: Mapping[str, str] | None = None,
    routing_key: str | None = None,
) -> RouteRequest:
    """The RouteRequest for one request to `endpoint`; InvalidArgument for a malformed hint.

    `routing_key` is a key the caller already holds (Recommend's user id): on an endpoint
    that reads keys it stands in for the one the request carries."""
    # Header names are stored lowercase; match whatever case the transport delivers.
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    spec_key, spec_override = endpoint.routing_key, endpoint.override
    reads_keys = spec_key.parameter is not None or spec_key.header is not None
    if routing_key is None or not reads_keys:
        routing_key = _hint(parameters or {}, lowered, spec_key.parameter, spec_key.header)
    return RouteRequest(
        endpoint=endpoint.name,
        routing_key=routing_key,
        override_variant=_hint(
            parameters or {}, lowered, spec_override.parameter, spec_override.header
        ),
    )


def _hint(
    parameters: Mapping[str, object],
    headers: Mapping[str, str],
    parameter: str | None,
    header: str | None,
) -> str | None:
    if parameter is not None and parameter in parameters:
        value = parameters[parameter]
        # Integers are common ids; bool and float would give keys like "True" or "1.0".
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise InvalidArgument(
                f"parameter '{parameter}' must be a string or an integer, "
                f"got {type(value).__name__}"
            )
        if value:
            return value
    if header is not None:
        return headers.get(header) or None
    return None
