"""Drive the real Feast (in .venv-feast, made by scripts/feast_env.sh) from the main venv.

Feast cannot live in the main venv (it pins redis<8 and pandas<3), so tests and the
benchmark run it as subprocesses: `feast apply`, `feast materialize`, Python snippets that
call FeatureStore.get_online_features and print JSON, and `feast serve`.

    python = ensure_feast_env()          # FeastSetupError when it cannot be made
    feast(repo, "apply"); materialize(repo)
    rows = run_feast_json(repo, "print(json.dumps(...))")
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadtests.gateway_process import REPO_ROOT
from loadtests.side_venv import SideVenvError, make_side_venv

ENV_SCRIPT = REPO_ROOT / "scripts" / "feast_env.sh"
# The first run installs about 400 MB of wheels; feast commands take 30 to 60 s on 2 cores.
ENV_SETUP_TIMEOUT_S = 1200.0
COMMAND_TIMEOUT_S = 300.0


class FeastSetupError(RuntimeError):
    """The Feast venv could not be made, or a Feast command failed."""


@functools.cache
def ensure_feast_env() -> Path:
    """The python of .venv-feast, creating the venv first when needed (once per process)."""
    try:
        return make_side_venv(ENV_SCRIPT, ENV_SETUP_TIMEOUT_S)
    except SideVenvError as error:
        raise FeastSetupError(str(error)) from None


def feast_python_or_skip() -> Path:
    """The Feast venv's python; a test is skipped when it cannot be made, except on CI
    (CI set), where that is a failure: the Feast tests must run there."""
    try:
        return ensure_feast_env()
    except FeastSetupError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Feast venv (scripts/feast_env.sh): {str(exc).splitlines()[0]}")


def _run(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    """Run the Feast venv's python (or, args[0] "feast", its CLI); its stdout."""
    python = ensure_feast_env()
    program = python.parent / "feast" if args[0] == "feast" else python
    args = args[1:] if args[0] == "feast" else args
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(program), *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise FeastSetupError(
            f"{' '.join(args[:3])} failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result.stdout


def feast(repo: Path, *args: str) -> str:
    """Run the feast CLI in repo."""
    return _run(["feast", *args], repo)


def materialize(repo: Path) -> None:
    end = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    feast(repo, "materialize", "2000-01-01T00:00:00", end)


def run_feast_json(repo: Path, code: str) -> Any:
    """Run code in the Feast venv (json, FeatureStore and `store` for repo imported); it must
    print one JSON document as its last line."""
    prelude = "import json\nfrom feast import FeatureStore\nstore = FeatureStore(repo_path='.')\n"
    out = _run(["-"], repo, prelude + code)
    return json.loads(out.strip().splitlines()[-1])


def run_python_json(code: str) -> Any:
    """Run code in the Feast venv outside any repo; the last printed line is JSON."""
    out = _run(["-"], REPO_ROOT, "import json\n" + code)
    return json.loads(out.strip().splitlines()[-1])
