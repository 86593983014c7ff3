"""What routing takes (a RouteRequest) and gives (a RoutingDecision), and the policy protocol."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from switchyard.router.endpoint import EndpointSpec, VariantTarget


class RouteReason(StrEnum):
    """Why the primary variant was chosen; also a low-cardinality metric label."""

    OVERRIDE = "override"
    STICKY = "sticky"
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The routing hints of one request, already read from its parameters or headers."""

    endpoint: str
    routing_key: str | None = None
    override_variant: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    variant: str
    reason: RouteReason


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where one request goes: the primary variant that answers it, the shadows that mirror it."""

    endpoint: str
    primary: VariantTarget
    reason: RouteReason
    shadows: tuple[VariantTarget, ...] = ()


class PrimaryPolicy(Protocol):
    """Chooses the primary variant, or returns None to leave the choice to the next policy."""

    def choose(self, endpoint: EndpointSpec, request: RouteRequest) -> Choice | None: ...
