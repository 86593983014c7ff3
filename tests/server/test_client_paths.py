"""Client messages name files relative to the gateway's folders, never absolutely."""

from __future__ import annotations

from pathlib import Path

from switchyard.runtimes.errors import InvalidArgument, ModelLoadError, NotFound
from switchyard.server.client_paths import client_message, name_folder
from switchyard.server.error_status import INTERNAL_ERROR_MESSAGE, error_status, http_status


def test_paths_under_a_named_folder_become_relative(tmp_path: Path) -> None:
    name_folder(tmp_path / "repo", "model repository")
    message = f"model repository {tmp_path}/repo: no model directory {tmp_path}/repo/ranker"
    assert client_message(message) == (
        "model repository <model repository>: no model directory <model repository>/ranker"
    )
    # A sibling whose name merely starts the same is not under it.
    assert str(tmp_path) in client_message(f"{tmp_path}/repository/x", any_path=False)


def test_load_errors_lose_every_other_absolute_path_but_urls_stay() -> None:
    _, message = error_status(
        ModelLoadError("Load model from /srv/models/r/1/model.onnx failed: bad; see models:/r/2")
    )
    assert message == "Load model from .../model.onnx failed: bad; see models:/r/2"
    _, kept = error_status(ModelLoadError("Triton at http://triton:8001/v2/x did not answer"))
    assert kept == "Triton at http://triton:8001/v2/x did not answer"
    # Errors about requests keep their routes (they are not files).
    _, route = error_status(NotFound("no route for /x/y; the API lives under /v2"))
    assert route == "no route for /x/y; the API lives under /v2"
    _, argument = error_status(InvalidArgument("tensor 'a/b' has the wrong shape"))
    assert argument == "tensor 'a/b' has the wrong shape"


def test_anything_unexpected_is_a_generic_500_without_its_text() -> None:
    status, message, _ = http_status(RuntimeError("boom at /srv/secret/path.py line 3"))
    assert (status, message) == (500, INTERNAL_ERROR_MESSAGE)
