"""Random policy: requests without a routing key are split at random by weight."""

from __future__ import annotations

import random

from switchyard.router.decision import Choice, RouteReason, RouteRequest
from switchyard.router.endpoint import EndpointSpec
from switchyard.router.weights import cumulative_pick


class RandomPolicy:
    def __init__(self, rng: random.Random | None = None) -> None:
        # Injected so tests can seed it; no need for a cryptographic source.
        self._rng = rng or random.Random()

    def choose(self, endpoint: EndpointSpec, request: RouteRequest) -> Choice | None:
        return Choice(cumulative_pick(endpoint.shares, self._rng.random()), RouteReason.RANDOM)
