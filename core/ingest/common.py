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


def dedent_block(raw: str | None) -> str | None:
    """A text block as the registry writes it (XML <textblock>, TOP criteria): keep the line
    structure, drop the common indentation, trailing spaces and carriage returns."""
    if raw is None:
        return None
    lines = [ln.rstrip() for ln in raw.replace("\r", "").strip("\n").split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    first = lines[0].strip()
    indents = [len(ln) - len(ln.lstrip()) for ln in lines[1:] if ln.strip()]
    cut = min(indents) if indents else 0
    head_indent = len(lines[0]) - len(lines[0].lstrip())
    # when the first line is indented like the rest (TOP criteria), dedent it with them
    if head_indent and head_indent <= cut:
        cut = head_indent
    return "\n".join([first] + [ln[cut:] for ln in lines[1:]]).strip() or None


def set_provenance(rec: dict, source: str, raw_format: str, raw: str) -> dict:
    """Mark a record parsed from a full ClinicalTrials.gov document (XML or API v2 JSON)."""
    rec["sources"] = [source]
    rec["source"] = source
    rec["raw_format"] = raw_format
    rec["raw_document"] = raw
    rec["top_files"] = None
    return rec
