"""Client-sent text quoted in error messages, bounded.

A message echoes what the caller sent so the caller can see what was wrong; it must not echo
all of it: a 20,000-character model name would make a gRPC status too large for the client to
read (8 KiB of metadata by default) and a REST error as large as the request.
"""

from __future__ import annotations

MAX_ECHO_CHARS = 120


def client_text(value: object, max_chars: int = MAX_ECHO_CHARS) -> str:
    """`value` as text, cut to `max_chars` with a note of how long it was."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}... ({len(text)} characters)"
