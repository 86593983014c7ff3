"""Triton's model repository extension, the same on gRPC and REST: list the models, load and
unload them while serving (server/model_control.py does the work).

The index is open, like model metadata and Triton's. Load and unload change what every
replica serves: they need an identity with the admin role (server/access.py; a bearer token
as HTTP header or gRPC metadata `authorization`, or a client certificate) and are audited
with its name (`name (for <x-switchyard-actor>)` when that header is given).

Load parameters, as Triton's: `config`, a ModelConfig as JSON that replaces the model's
config.pbtxt. Triton's `file:<path>` parameters (model files sent with the request) are
refused: every replica must load the same files, so they belong in the repository.
Unload takes Triton's `unload_dependents` and has nothing to do with it (no ensembles).
"""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import InvalidArgument, PermissionDenied
from switchyard.server.access import AccessControl, required_role
from switchyard.server.caller import Actor, Caller
from switchyard.server.model_control import IndexEntry, ModelControl
from switchyard.server.types import ParameterValue

API = "repository"  # the api label of switchyard_auth_denied_total
CONFIG_PARAMETER = "config"
UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


class RepositoryApi:
    def __init__(self, models: ModelControl, access: AccessControl) -> None:
        self._models = models
        self._access = access

    def authorize(self, caller: Caller, action: str) -> Actor:
        """The caller as an Actor allowed to `action` (load | unload), or refused."""
        if not self._access.enabled:
            raise PermissionDenied(
                "loading and unloading models needs an admin identity; set admin.token (or "
                "SWITCHYARD_ADMIN_TOKEN), admin.tokens_file or admin.certificate_identities"
            )
        needs = required_role("POST", f"/v2/repository/models/*/{action}")
        return self._access.authorize(caller, API, needs)

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
