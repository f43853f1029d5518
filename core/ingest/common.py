"""What every importer shares: the error types and strict text decoding."""
from __future__ import annotations


class IngestError(Exception):
    """Input that stops the whole command (exit code 2, store unchanged). The message names the file."""


class BadRecord(Exception):
    """One record inside a bulk source that cannot be imported: skipped, named and counted."""


class HostileInput(IngestError):
    """XML with entity declarations (XXE, entity expansion bombs): always refused, never expanded."""


def decode_utf8(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM is accepted) or IngestError naming the file and the byte offset."""
    if not data.strip():
        raise IngestError(f"{where}: file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{where}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def clean(text: str | None) -> str | None:
    """Strip whitespace; empty becomes None."""
    if text is None:
        return None
    text = text.strip()
    return text or None
