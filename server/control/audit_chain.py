"""The audit trail as a hash chain: every record carries the hash of the one before it.

A record is a JSON object. Its `hash` covers every other field (canonical JSON: sorted keys,
no whitespace, UTF-8) after the previous record's hash:
    hash = sha256(prev || canonical)              "alg": "sha256"
    hash = HMAC-SHA256(key, prev || canonical)    "alg": "hmac-sha256"
with `seq` counting 1, 2, ... and `prev` = GENESIS for the first record. Editing a record
breaks its hash; deleting or moving one breaks the `seq` / `prev` links after it. Without a
key, someone who rewrites the whole tail from the edit on can make it verify again: keep the
key (admin.audit_key_file / SWITCHYARD_AUDIT_KEY) away from the trail, or export the head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
KEY_ENV = "SWITCHYARD_AUDIT_KEY"
CHAIN_FIELDS = ("seq", "prev", "hash", "alg")


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: the next one has seq + 1 and prev = hash."""

    seq: int = 0
    hash: str = GENESIS

    def to_text(self) -> str:
        return f"{self.seq} {self.hash}"

    @classmethod
    def from_text(cls, text: str | bytes | None) -> ChainHead:
        if not text:
            return cls()
        seq, _, digest = (text.decode() if isinstance(text, bytes) else text).partition(" ")
        return cls(int(seq), digest)


def canonical(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def digest(document: Mapping[str, Any], key: bytes | None) -> str:
    """The hash a record must carry: over its `prev` and every field but `hash`."""
    body = {name: value for name, value in document.items() if name != "hash"}
    message = str(document.get("prev", "")).encode() + canonical(body)
    if key is not None:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def seal(body: Mapping[str, Any], head: ChainHead, key: bytes | None) -> dict[str, Any]:
    """`body` as the record after `head`, with seq, prev, alg and hash."""
    record = {name: value for name, value in body.items() if name not in CHAIN_FIELDS}
    record["seq"] = head.seq + 1
    record["prev"] = head.hash
    record["alg"] = "hmac-sha256" if key is not None else "sha256"
    record["hash"] = digest(record, key)
    return record


def load_key(key_file: Path | None) -> bytes | None:
    """The HMAC key: the file's content (a trailing newline dropped), else the environment's
    SWITCHYARD_AUDIT_KEY, else None (plain sha256)."""
    if key_file is not None:
        key = key_file.read_bytes().rstrip(b"\r\n")
        if not key:
            raise ValueError(f"audit key file {key_file} is empty")
        return key
    text = os.environ.get(KEY_ENV, "")
    return text.encode() if text else None


@dataclass(frozen=True, slots=True)
class Problem:
    line: int  # 1-based line of the file (or position in the list)
    seq: int | None  # the record's seq, None when unreadable
    kind: str  # "edited" | "missing before it" | "out of order" | "unreadable"
    detail: str

    def __str__(self) -> str:
        seq = "?" if self.seq is None else str(self.seq)
        return f"record at line {self.line} (seq {seq}): {self.kind} ({self.detail})"


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    first_seq: int
    last_seq: int
    problem: Problem | None

    @property
    def intact(self) -> bool:
        return self.problem is None

    @property
    def trimmed(self) -> bool:
        """The trail begins after older records were dropped (the store keeps a window)."""
        return self.first_seq > 1

    def summary(self) -> str:
        if self.problem is not None:
            return str(self.problem)
        if self.records == 0:
            return "0 records, chain intact"
        text = f"{self.records} records, seq {self.first_seq}..{self.last_seq}, chain intact"
        if self.trimmed:
            text += f" (begins at seq {self.first_seq}: older records were trimmed)"
        return text


def verify_lines(lines: Iterable[str], key: bytes | None, from_start: bool = False) -> Verdict:
    """The first problem of a JSONL trail, or none. Blank lines are skipped."""
    parsed: list[tuple[int, dict[str, Any] | None, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record, error = _parse(line)
        parsed.append((number, record, error))
    seqs = {r["seq"] for _, r, _ in parsed if r is not None}
    previous: dict[str, Any] | None = None
    first_seq = last_seq = 0
    count = 0
    for number, record, error in parsed:
        if record is None:
            return Verdict(count, first_seq, last_seq, Problem(number, None, "unreadable", error))
        seq: int = record["seq"]
        problem = _check(record, previous, key, from_start, seqs)
        if problem is not None:
            return Verdict(count, first_seq, last_seq, Problem(number, seq, *problem))
        if previous is None:
            first_seq = seq
        previous, last_seq, count = record, seq, count + 1
    return Verdict(count, first_seq, last_seq, None)


def verify_file(path: Path, key: bytes | None, from_start: bool = False) -> Verdict:
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        return verify_lines(file, key, from_start)


def _parse(line: str) -> tuple[dict[str, Any] | None, str]:
    try:
        record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    seq, prev, digest_ = record.get("seq"), record.get("prev"), record.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, "no positive integer 'seq'"
    if not isinstance(prev, str) or not isinstance(digest_, str):
        return None, "no 'prev' and 'hash' strings"
    if not HEX_DIGEST.fullmatch(prev) or not HEX_DIGEST.fullmatch(digest_):
        return None, "'prev' and 'hash' are not 64 lower-case hex digits"
    if record.get("alg") not in ("sha256", "hmac-sha256"):
        return None, "'alg' is neither sha256 nor hmac-sha256"
    return record, ""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps a repeated key's last value, other readers its first: a record with
    # one could verify while showing a reader something else.
    record = dict(pairs)
    if len(record) != len(pairs):
        repeated = sorted({k for k, _ in pairs if sum(1 for n, _ in pairs if n == k) > 1})
        raise ValueError(f"the key(s) {', '.join(repeated)} appear more than once")
    return record


def _check(
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    key: bytes | None,
    from_start: bool,
    seqs: set[int],
) -> tuple[str, str] | None:
    alg = record["alg"]
    if alg == "hmac-sha256" and key is None:
        return "unreadable", "the record is HMAC-keyed: pass --key-file or SWITCHYARD_AUDIT_KEY"
    if alg == "sha256" and key is not None:
        # Else whoever rewrites a tail without the key would only need to write it unkeyed.
        return "edited", "the record is not HMAC-keyed, but a key was given"
    if not hmac.compare_digest(
        digest(record, key if alg == "hmac-sha256" else None), record["hash"]
    ):
        why = "its hash does not match its content"
        return "edited", why + (" (or the key is not the one it was written with)" if key else "")
    seq = record["seq"]
    if previous is None:
        if seq == 1 and record["prev"] != GENESIS:
            return "edited", "the first record's prev is not the chain's start"
        if seq > 1 and from_start:
            return "missing before it", f"the trail begins at seq {seq}, not 1"
        return None
    expected = previous["seq"] + 1
    if seq < expected:
        return "out of order", f"seq {seq} after seq {previous['seq']}"
    if seq > expected:
        if expected in seqs:
            return "out of order", f"seq {seq} before seq {expected}, which comes later"
        return "missing before it", f"seq {expected}..{seq - 1} absent"
    if record["prev"] != previous["hash"]:
        return "missing before it", "its prev is not the hash of the record before it"
    return None
