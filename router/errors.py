"""The error raised for an invalid routing configuration or admin change."""

from __future__ import annotations

from switchyard.runtimes.errors import InvalidArgument


class RoutingConfigError(InvalidArgument):
    """Invalid routing settings; `key` is the dotted path of the offending key.

    An InvalidArgument, so an admin API change that fails validation maps to a client error;
    at start the server wraps it into its own configuration error.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem

    def within(self, prefix: str) -> RoutingConfigError:
        """The same error with its key placed under `prefix` (an enclosing section)."""
        return RoutingConfigError(f"{prefix}.{self.key}" if self.key else prefix, self.problem)
