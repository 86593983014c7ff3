"""Shadow policy: which shadow variants mirror a request.

One decision per request covers all of the endpoint's shadow variants, so they see the same
requests and can be compared with each other too. Keyed requests decide by a hash of the key
(salted apart from the variant assignment), so a key is mirrored always or never, and raising
the fraction only adds keys; requests without a key decide at random.
"""

from __future__ import annotations

import random

from switchyard.router.decision import RouteRequest
from switchyard.router.endpoint import EndpointSpec, VariantTarget
from switchyard.router.hashing import key_point

# Salt for the shadow decision, so it is independent of which variant the key lands on.
_SHADOW_SALT = "\x00shadow"


class ShadowPolicy:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(
        self, endpoint: EndpointSpec, request: RouteRequest, primary: str
    ) -> tuple[VariantTarget, ...]:
        """The shadows to mirror this request to; never the primary variant itself."""
        shadow = endpoint.shadow
        if shadow is None or shadow.fraction <= 0:
            return ()
        if request.routing_key is not None:
            point = key_point(endpoint.name, request.routing_key, _SHADOW_SALT)
        else:
            point = self._rng.random()
        if point >= shadow.fraction:
            return ()
        return tuple(endpoint.variants[name] for name in shadow.variants if name != primary)
