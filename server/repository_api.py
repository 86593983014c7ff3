"""Triton's model repository extension, the same on gRPC and REST: list the models, load and
unload them while serving (server/model_control.py does the work).

The index is open, like model metadata. Load and unload change what every replica serves:
they need the admin token (`Authorization: Bearer <token>`, as HTTP header or gRPC
metadata) and are audited with their actor (`x-switchyard-actor`, else "admin").

Load parameters, as Triton's: `config`, a ModelConfig as JSON that replaces the model's
config.pbtxt. Triton's `file:<path>` parameters (model files sent with the request) are
refused: every replica must load the same files, so they belong in the repository.
Unload takes Triton's `unload_dependents` and has nothing to do with it (no ensembles).
"""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, PermissionDenied
from switchyard.server.admin_api import check_bearer
from switchyard.server.caller import Actor, Caller
from switchyard.server.model_control import IndexEntry, ModelControl
from switchyard.server.types import ParameterValue

ACTOR_KEY = "x-switchyard-actor"
CONFIG_PARAMETER = "config"
UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


class RepositoryApi:
    def __init__(self, models: ModelControl, token: str | None) -> None:
        self._models = models
        self._token = token

    def authorize(self, caller: Caller) -> Actor:
        """The caller as an Actor, once its token is checked."""
        if self._token is None:
            raise PermissionDenied(
                "loading and unloading models needs the admin token; set admin.token or "
                "SWITCHYARD_ADMIN_TOKEN"
            )
        check_bearer(self._token, caller.headers.get("authorization", ""), "model repository API")
        identity = caller.headers.get(ACTOR_KEY, "admin")[:100]
        return Actor(identity, "admin", caller.peer, caller.reason())

    def index(self, ready_only: bool) -> list[IndexEntry]:
        return self._models.index(ready_only)

    async def load(
        self, name: str, parameters: Mapping[str, ParameterValue | bytes], actor: Actor
    ) -> None:
        config_json: str | None = None
        for key, value in parameters.items():
            if key == CONFIG_PARAMETER and isinstance(value, str):
                config_json = value
            elif key.startswith("file:"):
                raise InvalidArgument(
                    f"load parameter '{client_text(key)}': model files sent with a load are not "
                    "taken "
                    "(every replica must load the same files); put them in the model "
                    "repository and load again"
                )
            else:
                raise InvalidArgument(
                    f"unknown load parameter '{client_text(key)}' (known: '{CONFIG_PARAMETER}', a "
                    "ModelConfig as a JSON string)"
                )
        await self._models.load(_model_name(name), config_json, actor)

    async def unload(
        self, name: str, parameters: Mapping[str, ParameterValue | bytes], actor: Actor
    ) -> None:
        unknown = sorted(set(parameters) - UNLOAD_PARAMETERS)
        if unknown:
            raise InvalidArgument(
                f"unknown unload parameters {client_text(unknown)} "
                f"(known: {sorted(UNLOAD_PARAMETERS)})"
            )
        await self._models.unload(_model_name(name), actor)


def _model_name(name: str) -> str:
    if not name:
        raise InvalidArgument("model_name is empty: name the model to load or unload")
    return name
