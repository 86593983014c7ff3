from __future__ import annotations

from switchyard.runtimes.client_text import MAX_ECHO_CHARS, client_text


def test_short_text_is_echoed_whole_and_long_text_as_a_bounded_prefix() -> None:
    assert client_text("ranker") == "ranker"
    assert client_text("x" * MAX_ECHO_CHARS) == "x" * MAX_ECHO_CHARS
    long = client_text("m" * 20_000)
    assert long.startswith("m" * MAX_ECHO_CHARS + "...") and long.endswith("(20000 characters)")
    assert len(long) < MAX_ECHO_CHARS + 40
    assert client_text([1] * 1000).endswith("(3000 characters)")  # str() of anything
