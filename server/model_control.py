"""Model control: which models this replica serves, changed while serving without a failed
request, and the same on every replica.

Models come from the config's `models:` and from a Triton-layout model repository
(`model_repository.path`); a version's file may come from the MLflow registry. Every change
goes one way (`_change`): load the new versions beside the served ones, check them (their
config.pbtxt's signature, the endpoints in force against the new catalog), publish the
catalog in one assignment, then retire what left it (repository.py). A change that fails
anywhere before the publish leaves what is served untouched and says why.

What changes it, by `model_repository.control_mode`:
  explicit  the repository API (load / unload, on any replica) and config reloads. A load or
            unload is done here first, so its caller learns whether it worked, then written
            to the control store as a ModelRecord: every other replica does the same on the
            store's notification, and a replica starting later applies every record at start.
  poll      this replica's scan of the repository folder (every replica sees the same files);
            config reloads; the API refuses.
  none      nothing after start; the API refuses, config reloads take endpoints only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from switchyard.protos import open_inference_pb2 as pb
from switchyard.router.table import RoutingTable
from switchyard.runtimes.client_text import client_text
from switchyard.runtimes.errors import FailedPrecondition, NotFound, SwitchyardError
from switchyard.server import triton_layout
from switchyard.server.caller import Actor
from switchyard.server.config import ModelConfig, ModelVersionConfig, SwitchyardConfig
from switchyard.server.control.plane import ControlPlane
from switchyard.server.control.state import ModelRecord
from switchyard.server.repository import Catalog, LoadedModel, ModelRepository, ServedModel
from switchyard.server.triton_config_bridge import check_signature
from switchyard.server.triton_layout import RepositoryStamp

log = logging.getLogger(__name__)

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of the repository index (Triton's RepositoryIndexResponse.ModelIndex)."""

    name: str
    version: str
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What a model name loads: its config, and what its repository files said."""

    config: ModelConfig
    triton_config: pb.ModelConfig | None = None
    warnings: tuple[str, ...] = ()
    stamp: RepositoryStamp | None = None  # the repository files'; None for `models:` ones


def unrouted_targets(table: RoutingTable, catalog: Catalog) -> list[str]:
    """Every endpoint variant of `table` that names a model or version `catalog` lacks."""
    problems = []
    for name, spec in sorted(table.endpoints.items()):
        for variant, target in sorted(spec.variants.items()):
            served = catalog.get(target.model)
            if served is None:
                problems.append(f"endpoints.{name}.variants.{variant}: model '{target.model}'")
            elif target.version and target.version not in served.versions:
                problems.append(
                    f"endpoints.{name}.variants.{variant}: version '{target.version}' of "
                    f"model '{target.model}'"
                )
    return problems


def _resolved(table: RoutingTable, catalog: Catalog, model: str) -> dict[str, LoadedModel]:
    """The version each endpoint variant naming `model` reaches in `catalog`."""
    served = catalog.get(model)
    reached = {}
    for name, spec in table.endpoints.items():
        for variant, target in spec.variants.items():
            if served is not None and target.model == model:
                loaded = served.versions.get(target.version or served.config.served_default_version)
                if loaded is not None:
                    reached[f"endpoints.{name}.variants.{variant}"] = loaded
    return reached


class ModelControl:
    def __init__(
        self,
        repository: ModelRepository,
        config: SwitchyardConfig,
        control: ControlPlane,
    ) -> None:
        self._repository = repository
        self._control = control
        self._settings = config.model_repository
        self._config = config
        self._configured = {model.name: model for model in config.models}
        self._lock = asyncio.Lock()  # one change at a time, whoever asks
        self._status: dict[str, tuple[str, str]] = {}  # models not served: state, reason
        self._stamps: dict[str, RepositoryStamp] = {}  # repository models as last loaded
        self._applied: dict[str, int] = {}  # the store's model records applied here
        self._records_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        control.on_models_changed(lambda _: self._records_changed.set())

    @property
    def mode(self) -> str:
        return self._settings.control_mode

    # The repository index ----------------------------------------------------------------

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model known here, served or not, with each served version (Triton's index)."""
        catalog = self._repository.catalog
        entries: list[IndexEntry] = []
        for name in sorted({*self._known_names(), *catalog, *self._status}):
            served = catalog.get(name)
            if served is not None:
                entries.extend(IndexEntry(name, version, READY) for version in served.versions)
            elif not ready_only:
                state, reason = self._status.get(name, (UNAVAILABLE, "unloaded"))
                entries.append(IndexEntry(name, "", state, reason))
        return entries

    def _known_names(self) -> list[str]:
        root = self._settings.path
        return [*self._configured, *(triton_layout.list_models(root) if root else [])]

    # The repository API --------------------------------------------------------------------

    async def load(self, name: str, config_json: str | None, actor: Actor) -> None:
        """Load (or load again) a model on every replica; raises why it could not."""
        self._require_explicit("load")
        async with self._lock:
            try:
                await self._load(name, config_json)
            except SwitchyardError as exc:
                log.error(
                    "model %s: load by %s refused, what is served stays: %s",
                    name,
                    actor.identity,
                    exc,
                )
                raise
            record = ModelRecord(True, config_json, actor.identity, time.time())
            self._applied[name] = await self._control.commit_model(name, record, "load", actor)

    async def unload(self, name: str, actor: Actor) -> None:
        """Stop serving a model on every replica once no endpoint routes to it."""
        self._require_explicit("unload")
        async with self._lock:
            await self._unload(name)
            record = ModelRecord(False, None, actor.identity, time.time())
            self._applied[name] = await self._control.commit_model(name, record, "unload", actor)

    def _require_explicit(self, action: str) -> None:
        if self.mode != "explicit":
            raise FailedPrecondition(
                f"cannot {action} models: model control mode is '{self.mode}' "
                "(start with --model-control-mode explicit to load and unload while serving)"
            )

    # Start, follow, stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Load what this replica serves at start: `models:`, the repository's start set,
        then what the store says was loaded or unloaded since. ModelLoadError for the first
        two (a gateway that cannot serve its config does not start); FailedPrecondition if
        an endpoint names a model that is not served."""
        async with self._lock:
            for name in self._start_set():
                await self._load(name, None, check_routing=False)
            await self._apply_records()
            missing = unrouted_targets(self._control.table, self._repository.catalog)
            if missing:
                raise FailedPrecondition(
                    "endpoints route to models that are not served: " + "; ".join(missing)
                )
        self._tasks.append(asyncio.create_task(self._follow_records(), name="model-records"))
        if self.mode == "poll" and self._settings.path is not None:
            self._tasks.append(asyncio.create_task(self._poll_forever(), name="model-poll"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_set(self) -> list[str]:
        names = list(self._configured)
        root = self._settings.path
        if root is None:
            return names
        available = [n for n in triton_layout.list_models(root) if n not in names]  # models: wins
        wanted = self._settings.load
        if self.mode != "explicit" or wanted is None or "*" in wanted:
            return names + available
        unknown = sorted(set(wanted) - set(available) - set(names))
        if unknown:
            raise NotFound(f"--load-model names models not in {root}: {', '.join(unknown)}")
        return names + [name for name in available if name in wanted]

    async def _follow_records(self) -> None:
        while True:
            await self._records_changed.wait()
            self._records_changed.clear()
            async with self._lock:
                try:
                    await self._apply_records()
                except Exception:  # keep following: the next record may apply
                    log.exception("applying the control store's model records failed")

    async def _apply_records(self) -> None:
        """Do what the store's model records say that this replica has not done yet. A
        failure here is this replica's alone: logged, shown in the index, not retried."""
        if self.mode != "explicit":
            return
        for name, record in sorted(self._control.models.items()):
            if self._applied.get(name) == record.revision:
                continue
            self._applied[name] = record.revision
            try:
                if record.loaded:
                    await self._load(name, record.config_json)
                elif name in self._repository.catalog:
                    await self._unload(name)
            except SwitchyardError as exc:
                log.error("model %s: another replica's %s failed here: %s",
                          name, "load" if record.loaded else "unload", exc)  # fmt: skip

    async def _poll_forever(self) -> None:
        root = self._settings.path
        assert root is not None
        while True:
            await asyncio.sleep(self._settings.poll_s)
            async with self._lock:
                try:
                    await self._poll_once(root)
                except Exception:  # keep polling: the folder may be readable again next time
                    log.exception("polling the model repository %s failed", root)

    async def _poll_once(self, root: Path) -> None:
        """Load what is new or changed in the folder, unload what left it."""
        changes = []
        listed = await asyncio.to_thread(triton_layout.list_models, root)
        present = [name for name in listed if name not in self._configured]  # models: wins
        for name in present:
            stamp = await asyncio.to_thread(triton_layout.repository_stamp, root, name)
            if self._stamps.get(name) == stamp:
                continue
            try:
                await self._load(name, None)
                changes.append(f"model {name}: loaded from {root}")
            except SwitchyardError as exc:
                self._stamps[name] = stamp  # tried: the next edit tries again
                log.error("model %s in %s not loaded: %s", name, root, exc)
        for name in [n for n in self._stamps if n not in present]:
            del self._stamps[name]
            try:
                await self._unload(name)
                changes.append(f"model {name}: unloaded, gone from {root}")
            except SwitchyardError as exc:
                log.error("model %s left %s but stays loaded: %s", name, root, exc)
        if changes:
            await self._control.audit_file_change(f"poll {root}", changes)

    # Config reloads ------------------------------------------------------------------------

    async def reload_config(
        self,
        models: list[ModelConfig],
        table: RoutingTable,
        install_routing: Callable[[], Awaitable[list[str]]],
        reason: str,
    ) -> list[str]:
        """A config edit's `models:` and endpoints, applied as one change or not at all:
        new and changed models load beside the served ones, the new endpoints are checked
        against the catalog they make, then the catalog and the routing swap together (no
        await between the two) and the versions left behind retire."""
        if self.mode == "none" and models != list(self._configured.values()):
            raise FailedPrecondition(
                "models: changed, but model control mode is 'none': it applies on restart"
            )
        wanted = {model.name: model for model in models}
        async with self._lock:
            changed = [m for m in models if self._configured.get(m.name) != m]
            removed = [name for name in self._configured if name not in wanted]
            prepared: dict[str, ServedModel] = {}
            new_versions: list[LoadedModel] = []
            try:
                for model in changed:
                    source = await asyncio.to_thread(self._resolve_files, ModelSource(model))
                    served, loaded = await self._repository.prepare(source.config)
                    new_versions.extend(loaded)
                    prepared[model.name] = served
                catalog = {**self._repository.catalog, **prepared}
                for name in removed:
                    catalog.pop(name, None)
                self._check_change(table, catalog)
            except BaseException:
                await self._repository.retire(new_versions, count=False)
                raise
            old = self._repository.catalog
            self._repository.publish(catalog)
            routing_changes = await install_routing()
            self._configured = wanted
            await self._retire_replaced(old, catalog)
        changes = [f"model {name}: loaded" for name in prepared]
        changes += [f"model {name}: unloaded" for name in removed]
        if changes:
            await self._control.audit_file_change(reason, changes)
        return changes + routing_changes

    # One change ----------------------------------------------------------------------------

    async def _load(
        self, name: str, config_json: str | None, *, check_routing: bool = True
    ) -> None:
        self._status[name] = (LOADING, "")
        try:
            source = await asyncio.to_thread(self._source, name, config_json)
            served, loaded = await self._repository.prepare(
                source.config,
                triton_config=source.triton_config,
                warnings=source.warnings,
            )
            try:
                for version in loaded:
                    if source.triton_config is not None:
                        check_signature(source.triton_config, version.signature)
                catalog = {**self._repository.catalog, name: served}
                if check_routing:
                    self._check_change(self._control.table, catalog)
            except BaseException:
                await self._repository.retire(loaded, count=False)
                raise
        except BaseException as exc:
            # Not served: the index says why. Still served (its old versions): nothing to say.
            if name in self._repository.catalog:
                self._status.pop(name, None)
            else:
                self._status[name] = (UNAVAILABLE, str(exc))
            raise
        for warning in source.warnings:
            log.warning("model %s: %s", name, warning)
        old = self._repository.catalog
        self._repository.publish(catalog)
        self._status.pop(name, None)
        if source.stamp is not None:
            self._stamps[name] = source.stamp
        await self._retire_replaced(old, catalog)

    async def _unload(self, name: str) -> None:
        old = self._repository.catalog
        if name not in old:
            raise NotFound(f"model '{client_text(name)}' is not loaded")
        catalog = {n: served for n, served in old.items() if n != name}
        still_routed = unrouted_targets(self._control.table, catalog)
        if still_routed:
            raise FailedPrecondition(
                f"model '{name}' is still routed to by "
                + "; ".join(still_routed)
                + ": change those endpoints first"
            )
        self._status[name] = (UNLOADING, "")
        self._repository.publish(catalog)
        await self._retire_replaced(old, catalog)
        self._status[name] = (UNAVAILABLE, "unloaded")

    def _check_change(self, table: RoutingTable, catalog: Catalog) -> None:
        """Refuse a catalog the endpoints cannot run on: a model or version they name that
        it lacks, or a version they reach whose inputs differ from the one reached now."""
        problems = unrouted_targets(table, catalog)
        for name in catalog:
            before = _resolved(self._control.table, self._repository.catalog, name)
            for where, loaded in _resolved(table, catalog, name).items():
                old = before.get(where)
                if old is not None and old.signature.inputs != loaded.signature.inputs:
                    problems.append(
                        f"{where} would reach {loaded.label}, whose inputs differ from "
                        f"{old.label}'s"
                    )
        if problems:
            raise FailedPrecondition("refused, what is served stays: " + "; ".join(problems))

    async def _retire_replaced(self, old: Catalog, new: Catalog) -> None:
        kept = {id(v) for served in new.values() for v in served.versions.values()}
        await self._repository.retire(
            v for served in old.values() for v in served.versions.values() if id(v) not in kept
        )

    # Sources -------------------------------------------------------------------------------

    def _source(self, name: str, config_json: str | None) -> ModelSource:
        """What `name` loads from (blocking: reads files, may ask the MLflow registry)."""
        root = self._settings.path
        if name in self._configured:
            if config_json is not None:
                raise FailedPrecondition(
                    f"model '{name}' comes from the config file's models:, which a load's "
                    "`config` parameter cannot replace; edit the config file instead"
                )
            return self._resolve_files(ModelSource(self._configured[name]))
        if root is None:
            known = ", ".join(sorted(self._configured)) or "none"
            raise NotFound(f"model '{client_text(name)}' is not in the config's models: ({known})")
        read = triton_layout.read_model(root, name, config_json)
        return ModelSource(read.config, read.triton_config, read.warnings, read.stamp)

    def _resolve_files(self, source: ModelSource) -> ModelSource:
        """Versions whose file is in the MLflow registry, with the local copy's path."""
        versions = [self._local_version(v) for v in source.config.versions]
        if versions == source.config.versions:
            return source
        return replace(source, config=source.config.model_copy(update={"versions": versions}))

    def _local_version(self, version: ModelVersionConfig) -> ModelVersionConfig:
        if version.source is None:
            return version
        from switchyard.server import mlflow_source  # mlflow only where a source names it

        resolved = mlflow_source.resolve(version.source, self._config.mlflow)
        return version.model_copy(update={"path": resolved.path})
