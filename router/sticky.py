"""Sticky policy: a routing key always lands on the same variant while the weights hold.

Layout: weighted rendezvous hashing rather than one point per key cut into intervals. Every
(endpoint, key, variant) gets its own stable point u in (0, 1]; the key goes to the variant
with the smallest -ln(u) / weight. Those scores are exponential races, so a variant wins with
probability weight / total, and scaling all weights alike changes nothing. What follows:

- Two variants (a canary): raising the canary from 5% to 10% moves exactly the keys that
  now fall to it, about 5%, all from stable to canary; lowering it moves keys only back.
- N variants: a key moves from variant A to B only if B's weight grew by a larger factor than
  A's. Changing one variant's weight moves keys only to it (raised) or only away from it
  (lowered), never between the others; adding a variant takes keys only into the new one;
  removing one spreads only its keys over the rest, by weight.
- Renaming the endpoint or a variant reassigns the keys involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from switchyard.router.decision import Choice, RouteReason, RouteRequest
from switchyard.router.endpoint import EndpointSpec
from switchyard.router.hashing import key_points


def sticky_variant(endpoint: str, key: str, shares: Mapping[str, float]) -> str:
    """The variant for `key` under `shares` (weights; any scale); ties go to the first in order."""
    live = [(name, share) for name, share in shares.items() if share > 0]
    points = key_points((endpoint, key), (name for name, _ in live))
    best_name = ""
    best_score = math.inf
    for (name, share), point in zip(live, points, strict=True):
        # 1 - point lies in (0, 1], so the logarithm is finite.
        score = -math.log(1.0 - point) / share
        if score < best_score or not best_name:
            best_name, best_score = name, score
    return best_name


class StickyPolicy:
    def choose(self, endpoint: EndpointSpec, request: RouteRequest) -> Choice | None:
        if request.routing_key is None:
            return None
        return Choice(
            sticky_variant(endpoint.name, request.routing_key, endpoint.shares), RouteReason.STICKY
        )
