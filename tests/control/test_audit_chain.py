"""The audit hash chain: a clean trail verifies; an edited, deleted, reordered or cut record,
or the wrong key, is reported at its line. And the per-replica file continues its chain
across restarts and starts a new segment after a corrupt last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.server.audit_cli import run_verify
from switchyard.server.audit_log import AuditLog
from switchyard.server.cli import build_parser
from switchyard.server.control.audit_chain import (
    GENESIS,
    ChainHead,
    seal,
    verify_file,
    verify_lines,
)
from switchyard.server.control.state import AuditEntry

KEY = b"a key kept away from the trail"


def entry(number: int) -> AuditEntry:
    return AuditEntry(
        "alice",
        "set weights",
        (f"endpoints.recs.weights.canary: {number - 1} -> {number}",),
        "replica-a",
        peer="10.0.0.7:51000",
        reason=f"step {number} — ü",  # non-ASCII survives the canonical form
        time="2026-12-01T12:00:00Z",
    )


def trail(count: int, key: bytes | None = None, first: ChainHead | None = None) -> list[str]:
    head = first or ChainHead()
    lines = []
    for number in range(1, count + 1):
        record = seal(entry(number).body(), head, key)
        head = ChainHead(record["seq"], record["hash"])
        lines.append(json.dumps(record, ensure_ascii=False))
    return lines


def problem_of(lines: list[str], key: bytes | None = None) -> tuple[int, int | None, str]:
    verdict = verify_lines(lines, key)
    assert verdict.problem is not None, verdict.summary()
    return verdict.problem.line, verdict.problem.seq, verdict.problem.kind


def test_a_clean_trail_verifies_with_and_without_a_key() -> None:
    for key in (None, KEY):
        verdict = verify_lines(trail(5, key), key)
        assert verdict.intact and verdict.summary() == "5 records, seq 1..5, chain intact"
    first = json.loads(trail(1)[0])
    assert first["seq"] == 1 and first["prev"] == GENESIS and first["alg"] == "sha256"
    assert json.loads(trail(1, KEY)[0])["alg"] == "hmac-sha256"


@pytest.mark.parametrize("key", [None, KEY])
def test_an_edited_field_is_reported_at_its_line(key: bytes | None) -> None:
    lines = trail(5, key)
    record = json.loads(lines[2])
    record["changes"] = ["endpoints.recs.weights.canary: 2 -> 100"]
    lines[2] = json.dumps(record)
    assert problem_of(lines, key) == (3, 3, "edited")


def test_a_deleted_record_is_missing_before_the_next() -> None:
    lines = trail(5)
    del lines[1]
    assert problem_of(lines) == (2, 3, "missing before it")
    assert problem_of([*trail(5)[:-1], trail(6)[-1]]) == (5, 6, "missing before it")


def test_two_swapped_records_are_out_of_order() -> None:
    lines = trail(5)
    lines[1], lines[2] = lines[2], lines[1]
    assert problem_of(lines) == (2, 3, "out of order")


def test_a_truncated_last_line_is_unreadable() -> None:
    lines = trail(4)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    assert problem_of(lines) == (4, None, "unreadable")


def test_the_wrong_key_or_no_key_is_reported_at_the_first_record() -> None:
    lines = trail(3, KEY)
    assert problem_of(lines, b"another key") == (1, 1, "edited")
    assert problem_of(lines, None) == (1, 1, "unreadable")  # keyed: it cannot be checked


def test_an_unkeyed_tail_in_a_keyed_trail_is_an_edit() -> None:
    """Whoever lacks the key could rewrite the tail as plain sha256 records that link: with
    the key given, an unkeyed record is refused."""
    keyed = trail(3, KEY)
    last = json.loads(keyed[-1])
    forged = trail(1, first=ChainHead(last["seq"], last["hash"]))
    assert problem_of([*keyed, *forged], KEY) == (4, 4, "edited")


def test_a_record_renumbered_to_hide_a_deletion_breaks_its_link() -> None:
    """Deleting seq 2 and rewriting seq 3 as seq 2 (rehashed, no key): its prev still names
    the deleted record, so the link to seq 1 fails."""
    lines = trail(3)
    third = json.loads(lines[2])
    third["seq"] = 2
    third["hash"] = seal(third, ChainHead(1, third["prev"]), None)["hash"]
    assert problem_of([lines[0], json.dumps(third)]) == (2, 2, "missing before it")


def test_a_trimmed_trail_is_reported_as_such_unless_from_start_is_asked() -> None:
    lines = trail(6)[2:]
    verdict = verify_lines(lines, None)
    assert verdict.intact and verdict.trimmed, verdict.summary()
    assert "begins at seq 3" in verdict.summary()
    strict = verify_lines(lines, None, from_start=True)
    assert strict.problem is not None and strict.problem.kind == "missing before it"


def test_the_file_chain_continues_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).write(entry(1))
    AuditLog(path).write(entry(2))  # a restart: continues from the file's last line
    log = AuditLog(path)
    log.write(entry(3))
    log.write(entry(4))
    assert verify_file(path, None).summary() == "4 records, seq 1..4, chain intact"


def test_a_corrupt_last_line_starts_a_new_segment_recorded_as_such(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path, KEY).write(entry(1))
    with path.open("a") as file:
        file.write('{"seq": 2, "cut sh')  # a crash mid-line, no newline
    AuditLog(path, KEY).write(entry(2))  # does not raise
    lines = path.read_text().splitlines()
    assert len(lines) == 4  # the cut line stays a line of its own
    restart = json.loads(lines[2])
    assert restart["seq"] == 1 and restart["action"].startswith("audit chain restarted")
    assert json.loads(lines[3])["seq"] == 2
    verdict = verify_file(path, KEY)  # the corruption stays visible
    assert verdict.problem is not None and (verdict.problem.line, verdict.problem.kind) == (
        2,
        "unreadable",
    )
    assert verify_lines(lines[2:], KEY).intact  # the new segment is a chain of its own


def test_the_cli_exit_status_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, key_file = tmp_path / "trail.jsonl", tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")  # a trailing newline is not part of the key
    lines = trail(3, KEY)
    path.write_text("\n".join(lines) + "\n")
    args = build_parser().parse_args(["audit", "verify", str(path), "--key-file", str(key_file)])
    assert run_verify(args) == 0
    assert capsys.readouterr().out.strip() == "3 records, seq 1..3, chain intact"
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert run_verify(args) == 1
    assert capsys.readouterr().out.startswith("record at line 2 (seq 3): missing before it")
    missing = build_parser().parse_args(["audit", "verify", str(tmp_path / "absent.jsonl")])
    assert run_verify(missing) == 2
    assert "absent.jsonl" in capsys.readouterr().err


def test_a_non_hex_hash_is_reported_not_raised() -> None:
    lines = trail(2)
    record = json.loads(lines[1])
    record["hash"] = "é" * 64  # hmac.compare_digest raises TypeError on non-ASCII text
    lines[1] = json.dumps(record, ensure_ascii=False)
    assert problem_of(lines)[:2] == (2, None)


def test_a_duplicate_key_is_unreadable_since_readers_disagree_on_which_counts() -> None:
    # json.loads keeps the last "identity" (the sealed one); another reader shows the first.
    lines = trail(2)
    lines[1] = '{"identity": "mallory", ' + lines[1][1:]
    assert problem_of(lines) == (2, None, "unreadable")


def test_two_writers_of_one_file_keep_one_chain(tmp_path: Path) -> None:
    # server.workers: N gateway processes, each an AuditLog on the same audit_log_path.
    path = tmp_path / "audit.jsonl"
    first, second = AuditLog(path, KEY), AuditLog(path, KEY)
    for number in range(1, 5):
        (first if number % 2 else second).write(entry(number))
    assert verify_file(path, KEY).summary() == "4 records, seq 1..4, chain intact"
