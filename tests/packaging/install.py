"""Build the wheel and install it into a fresh venv, as a user would (tests of packaging).

The wheel is installed without its dependencies into a fresh virtual environment that borrows
them from the test venv's site-packages through a .pth line. Paths named in a .pth file are not
scanned for .pth files of their own, so the test venv's editable-install finder (which maps
`switchyard` to this checkout) stays out: the fresh venv imports the installed copy only.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from loadtests.gateway_process import REPO_ROOT

# Files a user's project may well have, named like our subpackages; importing any fails.
SHADOWING_FILES = ("server.py", "router.py", "runtimes.py", "demo.py", "protos/__init__.py")
PIP = (sys.executable, "-m", "pip")


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO_ROOT)],
        check=True,
        timeout=300,
    )
    (path,) = out.glob("switchyard-*.whl")
    return path


def install_into_fresh_venv(wheel: Path, venv: Path) -> Path:
    """A fresh venv at `venv` holding the wheel; its dependencies come from the test venv."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site_packages / "test-venv-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    return venv


def make_shadowing_folder(folder: Path) -> Path:
    """A working folder whose own modules are named like ours and fail when imported."""
    for name in SHADOWING_FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"raise ImportError('the user project\\'s own {name} was imported')\n")
    return folder
