"""Venvs beside the main one (.venv-triton, .venv-feast) for tools whose pins clash with it,
each made by its idempotent scripts/*_env.sh, which prints only the venv's python."""

from __future__ import annotations

import subprocess
from pathlib import Path

from loadtests.gateway_process import REPO_ROOT


class SideVenvError(RuntimeError):
    """A side venv could not be made."""


def make_side_venv(script: Path, timeout_s: float) -> Path:
    """The python of the venv `script` makes, running it first (a no-op once it is made)."""
    try:
        result = subprocess.run(
            ["bash", str(script)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SideVenvError(f"{script} did not finish in {timeout_s:.0f} s") from error
    python = Path(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
    if result.returncode != 0 or python is None or not python.is_file():
        raise SideVenvError(
            f"{script} failed (exit {result.returncode}); it needs PyPI access the first "
            f"time.\nstdout:\n{result.stdout}\nstderr (last 4000 chars):\n{result.stderr[-4000:]}"
        )
    return python
