"""The admin REST API: read and change routing, drive rollouts. Bearer-token protected.

Routes (all under /admin/v1):
  GET  /endpoints                              endpoints, policies and rollout states
  PUT  /endpoints/{name}/weights               body {"weights": {"stable": 90, "canary": 10}}
  POST /endpoints/{name}/rollout/{action}      action: start | abort | promote
Every change is audited with its actor: the `X-Switchyard-Actor` header, else "admin".
"""

from __future__ import annotations

import hmac
from typing import Any

from switchyard.router.config import table_to_config
from switchyard.runtimes.errors import InvalidArgument, NotFound
from switchyard.server.error_status import HttpError, require_method
from switchyard.server.json_body import parse_object
from switchyard.server.routing import RoutingService

ACTOR_HEADER = b"x-switchyard-actor"
ROLLOUT_ACTIONS = ("start", "abort", "promote")


class AdminApi:
    def __init__(self, routing: RoutingService, token: str | None) -> None:
        self._routing = routing
        self._token = token

    def authorize(self, headers: dict[bytes, bytes]) -> None:
        """Refuse unless the request carries the configured bearer token."""
        if self._token is None:
            raise NotFound("the admin API is off; set admin.token or SWITCHYARD_ADMIN_TOKEN")
        scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HttpError(401, "the admin API needs an 'Authorization: Bearer <token>' header")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            raise HttpError(403, "the bearer token is not valid for the admin API")

    def handle(
        self, method: str, parts: list[str], headers: dict[bytes, bytes], body: bytes
    ) -> dict[str, Any]:
        """Serve /admin/v1/{parts...}; the returned document is the 200 response."""
        actor = headers.get(ACTOR_HEADER, b"admin").decode("latin-1")[:100]
        if parts == ["endpoints"]:
            require_method(method, "GET")
            return {
                "endpoints": table_to_config(self._routing.table),
                "rollouts": self._routing.rollout_states(),
            }
        if len(parts) == 3 and parts[0] == "endpoints" and parts[2] == "weights":
            require_method(method, "PUT")
            weights = parse_object(body or b"{}").get("weights")
            if not isinstance(weights, dict):
                raise InvalidArgument('body must be {"weights": {"<variant>": <number>, ...}}')
            changes = self._routing.set_weights(parts[1], weights, actor)
            return {"changes": changes}
        if len(parts) == 4 and parts[0] == "endpoints" and parts[2] == "rollout":
            require_method(method, "POST")
            action = parts[3]
            if action not in ROLLOUT_ACTIONS:
                raise NotFound(f"unknown rollout action '{action}' (actions: {ROLLOUT_ACTIONS})")
            controller = self._routing.rollout(parts[1])
            reason = f"{action} by {actor}"
            if action == "start":
                event = controller.start()
            elif action == "abort":
                event = controller.abort(reason)
            else:
                event = controller.promote(reason)
            return {"state": str(event.to_state), "canary_percent": event.to_percent}
        raise NotFound(f"no admin route /admin/v1/{'/'.join(parts)}")
