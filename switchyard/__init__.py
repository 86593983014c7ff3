"""Switchyard: a model-serving gateway for real-time inference.

The repository's top-level folders install as this package's subpackages (`server/` is
`switchyard.server`, and so on: see pyproject.toml's package-dir), so nothing generic like
`server` or `router` lands in site-packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("switchyard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
