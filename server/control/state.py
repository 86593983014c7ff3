"""What every replica must agree on about routing, as plain records, and the table it makes.

The config file gives each endpoint its base (variants, weights, rollout plan). On top of it,
the control store keeps one EndpointRecord per endpoint that has been changed while serving:
an admin's weights or a rollout step (an Override, with who and when) and the rollout's
status. A record remembers the fingerprint of the base it was laid on; it applies only on
that base, and a file edit that changes the endpoint's variants, weights or plan resets it
(`ControlPlane`). Models loaded or unloaded through the repository API get a ModelRecord
each, so that every replica serves the same set. Every record carries the store's revision
of its last write, which is also the control version at that moment.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from switchyard.router.config import endpoint_to_config
from switchyard.router.endpoint import EndpointSpec
from switchyard.router.rollout import IDLE, RolloutState, RolloutStatus
from switchyard.router.table import RoutingTable


@dataclass(frozen=True, slots=True)
class Override:
    """Weights set while serving, in place of the file's."""

    weights: Mapping[str, float]
    actor: str
    reason: str
    time_s: float  # wall clock


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    base_fingerprint: str
    override: Override | None = None
    rollout: RolloutStatus = IDLE
    revision: int = 0  # the store's; 0 for a record it does not hold yet

    def to_json(self) -> str:
        """The record as the store holds it (its revision is the store's to keep)."""
        document: dict[str, Any] = {"base": self.base_fingerprint, "override": None}
        if self.override is not None:
            o = self.override
            document["override"] = {
                "weights": dict(o.weights),
                "actor": o.actor,
                "reason": o.reason,
                "time_s": o.time_s,
            }
        r = self.rollout
        document["rollout"] = {
            "state": str(r.state),
            "step": r.step,
            "canary_percent": r.canary_percent,
            "step_started_s": r.step_started_s,
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, revision: int) -> EndpointRecord:
        document = json.loads(text)
        override = document.get("override")
        rollout = document["rollout"]
        return cls(
            base_fingerprint=document["base"],
            override=Override(
                weights={name: float(w) for name, w in override["weights"].items()},
                actor=override["actor"],
                reason=override["reason"],
                time_s=float(override["time_s"]),
            )
            if override
            else None,
            rollout=RolloutStatus(
                RolloutState(rollout["state"]),
                rollout["step"],
                float(rollout["canary_percent"]),
                float(rollout["step_started_s"]),
            ),
            revision=revision,
        )


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A model loaded or unloaded while serving (the repository API), for every replica to
    do alike. `config_json`: the ModelConfig the load was given in place of the
    repository's (Triton's `config` load parameter), if any."""

    loaded: bool
    config_json: str | None
    actor: str
    time_s: float  # wall clock
    revision: int = 0  # the store's; 0 for a record it does not hold yet

    def to_json(self) -> str:
        document = {
            "loaded": self.loaded,
            "config_json": self.config_json,
            "actor": self.actor,
            "time_s": self.time_s,
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, revision: int) -> ModelRecord:
        d = json.loads(text)
        return cls(bool(d["loaded"]), d["config_json"], d["actor"], float(d["time_s"]), revision)

    def with_revision(self, revision: int) -> ModelRecord:
        return ModelRecord(self.loaded, self.config_json, self.actor, self.time_s, revision)


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    version: int = 0  # counts every change the store has taken
    endpoints: Mapping[str, EndpointRecord] = field(default_factory=dict)
    models: Mapping[str, ModelRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One routing decision, written once to the shared trail by the replica that made it:
    who (identity, role), from where (peer; "" for the gateway's own decisions), why (the
    caller's reason), what (action and the changes as "path: old -> new"), when, and the
    replica. `chain` is the record's place in a hash chain (server/control/audit_chain.py),
    set by whoever appends it: the store for the shared trail, AuditLog for its file."""

    identity: str
    action: str
    changes: tuple[str, ...]
    replica: str
    role: str = "admin"
    peer: str = ""
    reason: str = ""
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    chain: Mapping[str, Any] | None = None  # seq, prev, alg, hash

    @property
    def actor(self) -> str:
        return self.identity

    def body(self) -> dict[str, Any]:
        """The record's fields without its place in a chain."""
        return {
            "time": self.time,
            "identity": self.identity,
            "role": self.role,
            "peer": self.peer,
            "reason": self.reason,
            "action": self.action,
            "changes": list(self.changes),
            "replica": self.replica,
        }

    def to_document(self) -> dict[str, Any]:
        return {**self.body(), **(self.chain or {})}

    def to_json(self) -> str:
        return json.dumps(self.to_document(), ensure_ascii=False)

    @classmethod
    def from_document(cls, d: Mapping[str, Any]) -> AuditEntry:
        chain = {name: d[name] for name in ("seq", "prev", "alg", "hash") if name in d}
        return cls(
            d.get("identity", d.get("actor", "")),  # "actor": entries from before the chain
            d["action"],
            tuple(d["changes"]),
            d["replica"],
            d.get("role", ""),
            d.get("peer", ""),
            d.get("reason", ""),
            d["time"],
            chain or None,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditEntry:
        return cls.from_document(json.loads(text))


def utc_text(time_s: float) -> str:
    """A wall-clock time as the audit trail and the admin API write it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time_s))


def base_fingerprint(spec: EndpointSpec) -> str:
    """What an override depends on in the file: the endpoint's variants, weights and plan.
    Shadows, routing keys and override hints may change under it."""
    config = endpoint_to_config(spec)
    kept = {key: config.get(key) for key in ("variants", "weights", "rollout")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def applies(record: EndpointRecord, spec: EndpointSpec) -> bool:
    return record.base_fingerprint == base_fingerprint(spec)


def table_in_force(base: RoutingTable, snapshot: ControlSnapshot) -> RoutingTable:
    """The file's table with every override laid on the base it was made for."""
    table = base
    for name, record in snapshot.endpoints.items():
        spec = base.endpoints.get(name)
        if spec is not None and record.override is not None and applies(record, spec):
            table = table.with_weights(name, record.override.weights)
    return table
