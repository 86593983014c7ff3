"""The admin REST API: read and change routing, drive rollouts. Bearer-token protected.

Routes (all under /admin/v1), answered alike by every replica (the state is the control
store's):
  GET    /endpoints                            the table in force, its version, the
                                               overrides, rollout states, the store
  PUT    /endpoints/{name}/weights             body {"weights": {"stable": 90, "canary": 10}}
  DELETE /endpoints/{name}/override            back to the config file's weights
  POST   /endpoints/{name}/rollout/{action}    action: start | abort | promote
  GET    /audit?limit=N                        the shared audit trail, oldest first
  GET    /lease                                the replica judging rollouts now
Each route needs a role (server/access.py ROUTE_ROLES: viewer reads, operator changes
weights and drives rollouts). Every change is audited (a hash-chained record: README, "Audit
trail") with its actor: the identity of the token or client certificate (`identity (for
<X-Switchyard-Actor>)` when that header is given), its role, the peer address and the
caller's reason: a "reason" field in the JSON body (PUT weights; an optional body on DELETE
override and POST rollout) or else the `X-Switchyard-Reason` header.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from switchyard.router.config import table_to_config
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, NotFound
from switchyard.server.access import AccessControl, required_role
from switchyard.server.caller import Actor, Caller, clean_reason
from switchyard.server.control.plane import ControlPlane
from switchyard.server.error_status import require_method
from switchyard.server.json_body import parse_object

API = "admin"  # the api label of switchyard_auth_denied_total
DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 10_000


class AdminApi:
    def __init__(self, control: ControlPlane, access: AccessControl) -> None:
        self._control = control
        self._access = access

    def authorize(self, caller: Caller, method: str, parts: list[str]) -> Actor:
        """The caller as an Actor allowed /admin/v1/{parts...}, or refused (401/403/429)."""
        if not self._access.enabled:
            raise NotFound(
                "the admin API is off; set admin.token (or SWITCHYARD_ADMIN_TOKEN), "
                "admin.tokens_file or admin.certificate_identities"
            )
        needs = required_role(method, "/admin/v1/" + "/".join(parts))
        return self._access.authorize(caller, API, needs)

    async def handle(
        self,
        method: str,
        parts: list[str],
        actor: Actor,
        body: bytes,
        query: dict[str, list[str]],
    ) -> dict[str, Any]:
        """Serve /admin/v1/{parts...}; the returned document is the 200 response."""
        control = self._control
        if parts == ["endpoints"]:
            require_method(method, "GET")
            return {
                "version": control.version,
                "endpoints": table_to_config(control.table),
                "overrides": control.overrides(),
                "rollouts": control.rollout_states(),
                "control": {
                    "store": control.store.description,
                    "up": control.store_up,
                    "replica": control.replica,
                },
            }
        if parts == ["audit"]:
            require_method(method, "GET")
            limit = _limit(query)
            return {"entries": [e.to_document() for e in await control.audit_trail(limit)]}
        if len(parts) == 3 and parts[0] == "endpoints" and parts[2] == "weights":
            require_method(method, "PUT")
            document = parse_object(body or b"{}")
            weights = document.get("weights")
            if not isinstance(weights, dict):
                raise InvalidArgument('body must be {"weights": {"<variant>": <number>, ...}}')
            actor = _with_body_reason(actor, document)
            return {"changes": await control.set_weights(parts[1], weights, actor)}
        if len(parts) == 3 and parts[0] == "endpoints" and parts[2] == "override":
            require_method(method, "DELETE")
            actor = _with_body_reason(actor, parse_object(body or b"{}"))
            return {"changes": await control.reset(parts[1], actor)}
        if len(parts) == 4 and parts[0] == "endpoints" and parts[2] == "rollout":
            require_method(method, "POST")
            actor = _with_body_reason(actor, parse_object(body or b"{}"))
            status = await control.rollout_action(parts[1], parts[3], actor)
            return {"state": str(status.state), "canary_percent": status.canary_percent}
        if parts == ["lease"]:
            require_method(method, "GET")
            return {"holder": await control.lease_holder()}
        raise NotFound(f"no admin route /admin/v1/{client_text('/'.join(parts))}")


def _with_body_reason(actor: Actor, document: dict[str, Any]) -> Actor:
    """The body's "reason", if it has one, in place of the header's."""
    reason = document.get("reason")
    if reason is None:
        return actor
    if not isinstance(reason, str):
        raise InvalidArgument('"reason" must be a string: why the change is made, for the audit')
    return replace(actor, reason=clean_reason(reason))


def _limit(query: dict[str, list[str]]) -> int:
    text = query.get("limit", [str(DEFAULT_AUDIT_LIMIT)])[-1]
    if not text.isdigit() or not 1 <= int(text) <= MAX_AUDIT_LIMIT:
        raise InvalidArgument(f"limit must be a whole number from 1 to {MAX_AUDIT_LIMIT}")
    return int(text)
