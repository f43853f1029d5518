"""ClinicalTrials.gov legacy XML (public.xsd, the `AllPublicXML.zip` layout) -> canonical record, and the
reading of a --xml source (zip archive, directory or single file), in a process pool on 2+ cores.

Parsed with defusedxml: entity declarations (XXE, billion laughs) and external references are
refused, never resolved or expanded.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import defusedxml
import defusedxml.ElementTree as DET

from core.ingest.common import (NCT_ID, BadRecord, HostileInput, IngestError, Progress, clean, dedent_block,
                                dir_files, is_zip, open_zip, read_file, set_provenance, zip_member)
from core.record import empty_record



def _text(node: ET.Element | None, path: str) -> str | None:
    if node is None:
        return None
    el = node.find(path)
    if el is None:
        return None
    return clean(el.text if len(el) == 0 else "".join(el.itertext()))


def _block(node: ET.Element | None, path: str) -> str | None:
    """A <textblock>: keep line structure, drop the XML indentation and carriage returns."""
    if node is None:
        return None
    el = node.find(path)
    return None if el is None else dedent_block("".join(el.itertext()))


def _date(root: ET.Element, tag: str) -> tuple[str | None, str | None]:
    el = root.find(tag)
    if el is None:
        return None, None
    return clean(el.text), clean(el.get("type"))


def defused_fromstring(data: bytes) -> ET.Element:
    """defusedxml's parser (its entity, external-reference and DTD guards untouched), with element
    start/end wired straight to the C TreeBuilder instead of through the pure-Python XMLParser's
    per-element methods: the same tree for un-namespaced documents such as ClinicalTrials.gov's,
    about a quarter less parse time. (A namespaced tag would arrive as 'uri}name'; the root check
    below then rejects the record.)"""
    parser = DET.DefusedXMLParser(target=ET.TreeBuilder())
    expat = parser.parser
    expat.ordered_attributes = False          # attributes as the dict TreeBuilder.start takes
    expat.StartElementHandler = parser.target.start
    expat.EndElementHandler = parser.target.end
    parser.feed(data)
    return parser.close()


def parse_xml(data: bytes, where: str) -> dict[str, Any]:
    """Bytes of one study XML -> canonical record plus sources/raw fields. Raises BadRecord or HostileInput."""
    try:
        root = defused_fromstring(data)
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden) as exc:
        raise HostileInput(f"{where}: refused: XML declares entities or external references ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise BadRecord(f"{where}: not well-formed XML ({exc})") from None
    if root.tag != "clinical_study":
        raise BadRecord(f"{where}: root element is <{root.tag}>, expected <clinical_study>")
    nct = _text(root, "id_info/nct_id")
    if not nct or not NCT_ID.fullmatch(nct):
        raise BadRecord(f"{where}: missing or invalid id_info/nct_id ({nct!r})")
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRecord(f"{where}: not UTF-8 (invalid byte at offset {exc.start})") from None

    rec = empty_record(nct)
    rec["brief_title"] = _text(root, "brief_title")
    rec["official_title"] = _text(root, "official_title")
    rec["acronym"] = _text(root, "acronym")
    rec["brief_summary"] = _block(root, "brief_summary/textblock")
    rec["detailed_description"] = _block(root, "detailed_description/textblock")
    rec["phase"] = _text(root, "phase")
    rec["study_type"] = _text(root, "study_type")
    rec["overall_status"] = _text(root, "overall_status")
    rec["why_stopped"] = _text(root, "why_stopped")
    rec["start_date"], rec["start_date_type"] = _date(root, "start_date")
    rec["completion_date"], rec["completion_date_type"] = _date(root, "completion_date")
    rec["primary_completion_date"], rec["primary_completion_date_type"] = _date(root, "primary_completion_date")
    enr = root.find("enrollment")
    if enr is not None and clean(enr.text):
        try:
            rec["enrollment"] = int(float(enr.text.strip()))
        except ValueError:
            raise BadRecord(f"{where}: enrollment is not a number ({enr.text!r})") from None
        rec["enrollment_type"] = clean(enr.get("type"))
    rec["conditions"] = [t for t in (clean(c.text) for c in root.findall("condition")) if t]
    rec["keywords"] = [t for t in (clean(c.text) for c in root.findall("keyword")) if t]
    rec["interventions"] = [
        {"type": _text(iv, "intervention_type"), "name": _text(iv, "intervention_name"),
         "description": _text(iv, "description"),
         "other_names": [t for t in (clean(o.text) for o in iv.findall("other_name")) if t]}
        for iv in root.findall("intervention")
    ]
    rec["arm_groups"] = [
        {"label": _text(a, "arm_group_label"), "type": _text(a, "arm_group_type"), "description": _text(a, "description")}
        for a in root.findall("arm_group")
    ]
    for key, tag in (("primary_outcomes", "primary_outcome"), ("secondary_outcomes", "secondary_outcome")):
        rec[key] = [
            {"measure": _text(o, "measure"), "time_frame": _text(o, "time_frame"), "description": _text(o, "description")}
            for o in root.findall(tag)
        ]
    elig = root.find("eligibility")
    rec["eligibility_criteria"] = _block(elig, "criteria/textblock")
    rec["gender"] = _text(elig, "gender")
    rec["minimum_age"] = _text(elig, "minimum_age")
    rec["maximum_age"] = _text(elig, "maximum_age")
    rec["healthy_volunteers"] = _text(elig, "healthy_volunteers")
    rec["lead_sponsor"] = _text(root, "sponsors/lead_sponsor/agency")
    rec["sponsor_class"] = _text(root, "sponsors/lead_sponsor/agency_class")
    rec["collaborators"] = [t for t in (_text(c, "agency") for c in root.findall("sponsors/collaborator")) if t]
    design = root.find("study_design_info")
    rec["design_info"] = {k: _text(design, k) for k in ("allocation", "intervention_model", "primary_purpose", "masking")}
    rec["has_results"] = root.find("clinical_results") is not None
    return set_provenance(rec, "ctgov_xml", "xml", raw)


# ---- a --xml source: (kind, container, names) tasks so that workers read their own files ----

_PARALLEL_MIN = 200     # below this many XML files, a process pool costs more than it saves
_CHUNK = 250
_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _worker_zip(path: str) -> zipfile.ZipFile:
    """One open archive per process: reading the central directory of a bulk zip costs ~0.1 s, too
    much to repeat for every chunk. Keyed by pid so a forked worker never shares its parent's handle."""
    key = (os.getpid(), path)
    if key not in _ZIPS:
        _ZIPS[key] = zipfile.ZipFile(path)
    return _ZIPS[key]


def _close_zips() -> None:
    for key in [k for k in _ZIPS if k[0] == os.getpid()]:
        _ZIPS.pop(key).close()


def _xml_task(task: tuple[str, str, list[str]]):
    """Worker: parse one chunk of files -> (Arrow table of good records,
    [(file, member, error, hostile)] for the others, number of files)."""
    kind, container, names = task
    records: list[dict] = []
    failed: list[tuple[str, str, str, bool]] = []
    # Parsed trees hold no reference cycles: the cyclic GC only re-scans the records being built
    # (about 15% of the parse time), so it is paused for the chunk.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _xml_chunk(kind, container, names, records, failed)
    finally:
        if gc_was_enabled:
            gc.enable()


def _xml_chunk(kind: str, container: str, names: list[str], records: list, failed: list):
    from core.store.trials import records_table

    for name in names:
        file, member = (container, name) if kind == "zip" else (name, name)
        where = f"{container}:{name}" if kind == "zip" else name
        try:
            data = zip_member(_worker_zip(container), name, where) if kind == "zip" else Path(name).read_bytes()
            records.append(parse_xml(data, where))
        except HostileInput as exc:
            failed.append((file, member, str(exc), True))
        except BadRecord as exc:
            failed.append((file, member, str(exc), False))
        except OSError as exc:
            failed.append((file, member, f"{where}: cannot read ({exc})", False))
    # built here, in the worker, so that both cores share the Arrow conversion
    return records_table(records), failed, len(names)


def _xml_tasks(path: Path) -> tuple[list[tuple[str, str, list[str]]], int]:
    """A --xml argument -> worker tasks and the number of files. Single files are parsed here."""
    files = dir_files(path, "*.xml", "*.xml study records")
    if files is not None:
        names = sorted(map(str, files))
        kind, container = "dir", str(path)
    elif is_zip(path):
        with open_zip(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".xml")]
        if not names:
            raise IngestError(f"{path}: archive holds no *.xml study records")
        kind, container = "zip", str(path)
    else:
        return [("file", str(path), [str(path)])], 1
    return [(kind, container, names[i:i + _CHUNK]) for i in range(0, len(names), _CHUNK)], len(names)


def _can_fork() -> bool:
    """A process pool by fork only where this process is single-threaded (the CLI, the benchmark):
    in a threaded host (the Streamlit server) a fork could copy a lock held by another thread, and
    spawn/forkserver would re-run the host's __main__. There the XML is parsed in-process."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def parse_xml_sources(paths: Iterable[Path], progress: Progress | None, workers: int | None = None):
    """--xml arguments -> (Arrow table of records, skipped [(container, member, error)], files seen)."""
    import pyarrow as pa

    from core.store.trials import TRIALS_ARROW_SCHEMA, dedupe_last

    tables: list = []
    errors: list[tuple[str, str, str]] = []
    tasks, total, singles = [], 0, set()
    for p in paths:
        t, n = _xml_tasks(Path(p))
        if t and t[0][0] == "file":
            singles.add(str(p))
            if not read_file(Path(p)).strip():
                raise IngestError(f"{p}: file is empty")
        tasks.extend(t)
        total += n
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    done = 0

    def collect(result):
        nonlocal done
        table, failed, n = result
        done += n
        for file, member, err, hostile in failed:
            if hostile or file in singles:
                raise IngestError(err)
            errors.append((file, member, err))
        tables.append(table)
        if progress:
            progress("xml", done, total)

    if workers > 1 and total >= _PARALLEL_MIN and _can_fork():
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for result in pool.map(_xml_task, tasks):
                collect(result)
    else:
        try:
            for task in tasks:
                collect(_xml_task(task))
        finally:
            _close_zips()
    table = dedupe_last(pa.concat_tables(tables)) if tables else TRIALS_ARROW_SCHEMA.empty_table()
    if table.num_rows == 0 and errors:
        raise IngestError(f"{errors[0][0]}: no usable study record ({len(errors)} skipped; first: {errors[0][2]})")
    return table, errors, total
