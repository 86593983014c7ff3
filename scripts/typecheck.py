"""mypy --strict over the switchyard package, loadtests/ and tests/ (settings: pyproject.toml).

mypy cannot see the package under its installed names: the folders install as `switchyard.*`
through setuptools' package-dir mapping, and the editable install is an import hook that
mypy does not run, while the folders themselves would be checked as `server`, `router`...
So this lays out a tree of links, .mypy_tree/switchyard/<subpackage> -> <folder>, from the
package-dir table (one source of truth), checks that tree (pyproject's `files` and
`mypy_path` name it) and prints the errors under the real paths.

Run: `.venv/bin/python scripts/typecheck.py [mypy arguments]`
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / ".mypy_tree"


def package_dirs() -> dict[str, str]:
    """Installed package name -> its folder, for the folders that are not already named so."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        mapping: dict[str, str] = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {package: folder for package, folder in mapping.items() if package != folder}


def lay_out_tree(dirs: dict[str, str]) -> None:
    """Links for every mapped folder, and for the files of the top package beside them."""
    for package, folder in dirs.items():
        link = TREE.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        target = Path(*[".."] * len(link.relative_to(TREE).parts), folder)
        if link.is_symlink() and link.readlink() == target:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=True)
    for top in {package.split(".")[0] for package in dirs}:
        for stale in (TREE / top).glob("*.py"):
            if not stale.exists():  # its file was removed or renamed
                stale.unlink()
        for source in (ROOT / top).glob("*.py"):
            link = TREE / top / source.name
            if not link.is_symlink():
                link.symlink_to(Path("../..", top, source.name))


def main(argv: list[str]) -> int:
    dirs = package_dirs()
    lay_out_tree(dirs)
    # .mypy_tree/switchyard/server/app.py: -> server/app.py:
    linked = "|".join(re.escape(package.replace(".", "/")) for package in dirs)
    to_real = re.compile(rf"^\.mypy_tree/({linked})/")
    real = {package.replace(".", "/"): folder for package, folder in dirs.items()}
    process = subprocess.run(
        [sys.executable, "-m", "mypy", *argv], cwd=ROOT, capture_output=True, text=True
    )
    for line in process.stdout.splitlines():
        line = to_real.sub(lambda match: real[match.group(1)] + "/", line)
        print(line.replace(".mypy_tree/", "", 1) if line.startswith(".mypy_tree/") else line)
    sys.stderr.write(process.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
