"""Reading the config file's YAML: a key given twice in one mapping is an error, at any level.

PyYAML's safe loader silently keeps the last of two equal keys, so a second `endpoints:`
replaces the first without a word; this loader refuses it, naming the key path and the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from switchyard.server.config_base import ConfigError, key_path


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys."""


def _duplicate_keys(node: Node, loc: tuple[str | int, ...]) -> list[str]:
    """`key.path: ...` lines for every key repeated in a mapping under `node`."""
    errors: list[str] = []
    if isinstance(node, MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            # Scalar keys compare by their text and tag, as the constructor would build them.
            key = key_node.value if key_node.id == "scalar" else id(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                errors.append(
                    f"{key_path((*loc, key))}: duplicate key (line {line}; first on line "
                    f"{seen[key]})"
                )
            else:
                seen[key] = line
            errors.extend(_duplicate_keys(value_node, (*loc, str(key))))
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            errors.extend(_duplicate_keys(item, (*loc, index)))
    return errors


def load_yaml(text: str, source: str) -> Any:
    """The document in `text`; ConfigError for invalid YAML or any duplicate key."""
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node, ())
        if duplicates:
            raise ConfigError(source, duplicates)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"(top level): not valid YAML: {exc}"]) from None
    finally:
        loader.dispose()
