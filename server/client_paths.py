"""Filesystem paths out of the messages clients see: the server log keeps the full paths,
a client learns where a file is relative to the model repository or the config's folder.

The gateway names its folders at start (`name_folder`); `client_message` writes a path under
one of them as `<model repository>/ranker/1/model.onnx`, and, in the messages of load errors,
any other absolute path as `.../model.onnx` (its file name only).
"""

from __future__ import annotations

import re
from pathlib import Path

# Folder (absolute, no trailing slash) -> its name in client messages; longest first.
_folders: dict[str, str] = {}
# An absolute path of two parts or more, not inside a URL or another word.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/<>~-])/(?:[^\s/'\"(),;:]+/)+[^\s/'\"(),;:]*")


def name_folder(folder: Path, name: str) -> None:
    """Write paths under `folder` as `<name>/...` in client messages (from now on)."""
    text = str(folder.expanduser().resolve()).rstrip("/")
    if text:
        _folders[text] = f"<{name}>"
        for unresolved in {str(folder.expanduser().absolute()).rstrip("/")} - {text}:
            _folders[unresolved] = f"<{name}>"


def _relative(message: str) -> str:
    for folder in sorted(_folders, key=len, reverse=True):
        message = re.sub(re.escape(folder) + r"(?=/|\b|$)", _folders[folder], message)
    return message


def _file_name_only(match: re.Match[str]) -> str:
    return ".../" + match.group(0).rsplit("/", 1)[-1]


def client_message(message: str, *, any_path: bool = False) -> str:
    """`message` with the named folders' paths relative; with `any_path` (messages of errors
    about files, never of URLs), other absolute paths shortened to their file names."""
    message = _relative(message)
    if any_path:
        message = _ABSOLUTE_PATH.sub(
            lambda match: ".../" + match.group(0).rsplit("/", 1)[-1], message
        )
    return message
