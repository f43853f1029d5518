"""What every importer shares: the error types, strict text decoding and file/archive access."""
from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path
from typing import Callable


NCT_ID = re.compile(r"NCT\d{8}")   # a ClinicalTrials.gov id, in every source


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


# ---- file access shared by the source readers ----

Progress = Callable[[str, int, int], None]   # (stage, done, total)
MAX_MEMBER_BYTES = 64 << 20  # one study record is far below this; more is a zip bomb or not a study


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read ({exc.strerror or exc})") from None


def open_zip(path: Path) -> zipfile.ZipFile:
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{path}: not a readable zip archive ({exc}); truncated or not a zip?") from None


def is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)


def zip_member(zf: zipfile.ZipFile, name: str, where: str) -> bytes:
    size = zf.getinfo(name).file_size
    if size > MAX_MEMBER_BYTES:
        raise BadRecord(f"{where}: member unpacks to {size} bytes, more than the {MAX_MEMBER_BYTES} allowed")
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BadRecord(f"{where}: cannot read archive member ({exc})") from None


def dir_files(path: Path, pattern: str, what: str) -> list[Path] | None:
    """A path argument: IngestError when it does not exist; a directory's files matching `pattern`, at any
    depth (IngestError when there are none: 'directory holds no <what>'); None when it is not a directory."""
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    if not path.is_dir():
        return None
    files = sorted(path.rglob(pattern))
    if not files:
        raise IngestError(f"{path}: directory holds no {what}")
    return files
