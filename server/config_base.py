"""The one pydantic base of every config section, its shared types, and the one error formatter.

Every section is strict: unknown keys are refused, values are never coerced ("5" is not an
int, 1 is not true), except that an integer is taken for a float (YAML writes `2` for 2.0).
Errors name the key path, `models.0.batching.max_batch_size: ...`, whatever section raised
them. Keys renamed for the one unit of durations (seconds, `_s`) are refused with their new name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# Model, version, variant and endpoint names; they fit gRPC metadata keys too.
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"

Loc = tuple[str | int, ...]
# A path is written as a string in YAML; relative ones resolve against the config's folder.
FilePath = Annotated[Path, Field(strict=False)]


class ConfigError(Exception):
    """The configuration is invalid; `errors` holds one `key.path: problem` line per error."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = [f"  {line}" for line in self.errors]
        super().__init__("\n".join([f"invalid configuration in {source}:", *lines]))


def _int_as_name(value: Any) -> Any:
    # YAML reads `version: 2` as an int; versions are names, so take it as "2".
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
VersionName = Annotated[str, BeforeValidator(_int_as_name), Field(pattern=NAME_PATTERN)]


class StrictModel(BaseModel):
    """The base of every section: frozen, unknown keys refused, strict types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    # Old key -> its new name, for keys renamed when durations moved to seconds.
    renamed_keys: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            raise_errors(
                cls.__name__,
                (
                    error_details((old,), f"renamed to {new} (seconds)", data[old])
                    for old, new in cls.renamed_keys.items()
                    if old in data
                ),
            )
        return data


def error_details(loc: Loc, message: str, value: object) -> InitErrorDetails:
    """One error at `loc` (relative to the model raising it) for ValidationError."""
    # The message goes in as context: braces in it (key templates) are not placeholders.
    kind = PydanticCustomError("config", "{message}", {"message": message})
    return InitErrorDetails(type=kind, loc=loc, input=value)


def raise_errors(title: str, errors: Iterable[InitErrorDetails]) -> None:
    """Raise the errors, if any, as one ValidationError (from inside a validator)."""
    collected = list(errors)
    if collected:
        raise ValidationError.from_exception_data(title, collected)


def key_path(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def error_lines(error: ValidationError, prefix: Loc = ()) -> list[str]:
    """One `key.path: problem` line per error, keys under `prefix`."""
    lines = []
    for item in error.errors(include_url=False):
        loc = (*prefix, *item["loc"])
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        lines.append(f"{key_path(loc)}: {message}")
    return lines
