"""Checksums of source files: each one recorded in the data card, and checked against the published one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from _errors import PrepareError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_entry(name: str, data: bytes, expected: str | None, *, verify: bool, reference: str) -> dict:
    """The data-card entry of one source file; with ``verify``, a known checksum must match.

    ``expected`` is the published sha256 (``None`` when none is known; then the computed one is only
    recorded). ``reference`` says where ``expected`` comes from.
    """
    digest = sha256_hex(data)
    entry = {"file": name, "bytes": len(data), "sha256": digest}
    if expected is None:
        entry["sha256_status"] = "unverified: no published checksum is known for this file"
    elif digest == expected:
        entry["sha256_status"] = f"verified: equals the sha256 of {reference}"
    elif verify:
        raise PrepareError(
            f"{name}: sha256 {digest}, expected {expected} (pass --no-verify for other files in this format)"
        )
    else:
        entry["sha256_status"] = f"differs from the sha256 of {reference} (--no-verify)"
    return entry


def all_verified(entries: Sequence[dict]) -> bool:
    return all(entry["sha256_status"].startswith("verified") for entry in entries)
