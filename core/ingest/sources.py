"""Resolve each real data source through data/sources.toml: a file under the data mirror, or a
download from upstream into a cache directory; either way checked against its sha256."""
from __future__ import annotations

import hashlib
import io
import os
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core import config
from core.ingest.common import IngestError


@dataclass(frozen=True)
class Source:
    name: str        # table name in sources.toml ('top' entries: 'top')
    path: str        # mirror-relative path
    url: str         # upstream URL ('' = mirror only)
    sha256: str
    member: str | None = None   # the file inside a zipped download


def load_sources(path: Path | None = None) -> dict[str, list[Source]]:
    """sources.toml -> {name: [Source, ...]} in file order."""
    path = path or config.SOURCES_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise IngestError(f"{path}: cannot read the data-source configuration ({exc})") from None
    out: dict[str, list[Source]] = {}
    for name, value in data.items():
        entries = value if isinstance(value, list) else [value]
        for e in entries:
            missing = {"path", "url", "sha256"} - set(e)
            if missing:
                raise IngestError(f"{path}: [{name}] lacks {', '.join(sorted(missing))}")
            out.setdefault(name, []).append(Source(name, e["path"], e["url"], e["sha256"], e.get("member")))
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("CTGEN_CACHE") or config.DATA_DIR / "cache")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, src: Source) -> Path:
    got = sha256_file(path)
    if got != src.sha256:
        raise IngestError(f"{path}: checksum mismatch for source {src.path} (sha256 {got}, expected {src.sha256})")
    return path


def resolve(src: Source, mirror: Path | None = None, timeout: float = 60.0) -> Path | None:
    """The local file for a source, or None when it has no mirror copy and no upstream URL."""
    mirror = mirror if mirror is not None else config.data_mirror()
    if mirror is not None:
        local = mirror / src.path
        if not local.is_file():
            raise IngestError(f"{local}: missing from the data mirror {mirror} (source {src.path})")
        return _check(local, src)
    target = cache_dir() / src.path
    if target.is_file() and sha256_file(target) == src.sha256:
        return target
    if not src.url:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(src.url, timeout=timeout) as resp:
            payload = resp.read()
    except OSError as exc:
        raise IngestError(f"{src.url}: download failed for {src.path} ({exc}); set CTGEN_DATA_MIRROR "
                          "to a local mirror instead") from None
    if src.member:
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as zf:
                payload = zf.read(src.member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise IngestError(f"{src.url}: not a zip with member {src.member!r} ({exc})") from None
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(payload)
    try:
        _check(tmp, src)
    except IngestError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)
    return target


def sample_data(db_path: str | os.PathLike | None, progress=None) -> dict:
    """Load the whole data mirror (or, without one, what upstream serves) in one transaction: every XML
    archive listed ([[ctgov_xml]] entries, in order), every TOP CSV, IQVIA outcomes through
    outcome2label.txt, DrugBank. Sources are resolved through data/sources.toml (path, URL, sha256)."""
    from core.ingest.merge import ingest

    mirror = config.data_mirror()
    srcs = load_sources()
    skipped: list[str] = []

    def get(name: str) -> list[tuple[Path, str]]:
        out = []
        for s in srcs.get(name, []):
            p = resolve(s, mirror)
            if p is None:
                skipped.append(s.path)
            else:
                out.append((p, s.path))
        return out

    xml = [p for p, _ in get("ctgov_xml")]
    ctj = [p for p, _ in get("ctgov_json")]
    top = get("top")
    out_csv = get("iqvia_outcomes")
    out_map = get("iqvia_outcome_map")
    dbk = get("drugbank")
    if out_csv and not out_map:
        raise IngestError("iqvia/outcome2label.txt: needed to map the IQVIA outcomes and not available")
    summary = ingest(
        db_path, xml=xml, ctgov_json=ctj, top=top,
        outcomes=out_csv[0][0] if out_csv else None, outcome_map=out_map[0][0] if out_map else None,
        drugbank=dbk[0][0] if dbk else None, progress=progress, command="sample-data",
    )
    summary["mirror"] = str(mirror) if mirror else None
    summary["skipped_sources"] = skipped
    return summary
