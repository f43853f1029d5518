"""ClinicalTrials.gov API v2 study JSON (the current format: `/api/v2/studies/{nctId}` and the bulk
`ctg-studies.json.zip`) -> the same canonical record as the legacy XML.

API v2 enum values and dates are mapped to the legacy XML spellings (PHASE2 -> "Phase 2",
DRUG -> "Drug", ESTIMATED -> "Anticipated", 2001-03 -> "March 2001", ...) so both formats look the
same in the store.

A --ctgov-json source (study file, page of studies, directory, or the bulk `ctg-studies.json.zip`) is
read study by study and handed on in batches (`JsonStream`), so memory stays bounded whatever the
archive's size; a file or archive member above STREAM_MIN_BYTES is itself parsed incrementally (ijson).
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.ingest.common import (NCT_ID, BadRecord, IngestError, Progress, clean, decode_utf8, dir_files, is_zip,
                                open_zip, read_file, set_provenance, zip_member)
from core.record import empty_record


_PHASES = {"EARLY_PHASE1": "Early Phase 1", "PHASE1": "Phase 1", "PHASE2": "Phase 2", "PHASE3": "Phase 3",
           "PHASE4": "Phase 4", "NA": "N/A"}
_STATUS = {"ACTIVE_NOT_RECRUITING": "Active, not recruiting", "ENROLLING_BY_INVITATION": "Enrolling by invitation",
           "NOT_YET_RECRUITING": "Not yet recruiting", "APPROVED_FOR_MARKETING": "Approved for marketing",
           "NO_LONGER_AVAILABLE": "No longer available", "TEMPORARILY_NOT_AVAILABLE": "Temporarily not available",
           "WITHHELD": "Withheld", "UNKNOWN": "Unknown status"}
_SPECIAL = {"NA": "N/A", "DIETARY_SUPPLEMENT": "Dietary Supplement", "GENETIC": "Genetic",
            "COMBINATION_PRODUCT": "Combination Product", "DIAGNOSTIC_TEST": "Diagnostic Test",
            "ALL": "All", "FEMALE": "Female", "MALE": "Male", "NIH": "NIH", "FED": "U.S. Fed",
            "OTHER_GOV": "Other", "INDUSTRY": "Industry", "NETWORK": "Other", "INDIV": "Other",
            "OTHER": "Other", "UNKNOWN": "Unknown", "EXPANDED_ACCESS": "Expanded Access",
            "NON_RANDOMIZED": "Non-Randomized", "NONE": "None (Open Label)",
            "PARALLEL": "Parallel Assignment", "SINGLE_GROUP": "Single Group Assignment",
            "CROSSOVER": "Crossover Assignment", "FACTORIAL": "Factorial Assignment",
            "SEQUENTIAL": "Sequential Assignment", "HEALTH_SERVICES_RESEARCH": "Health Services Research",
            "BASIC_SCIENCE": "Basic Science", "SUPPORTIVE_CARE": "Supportive Care",
            "DEVICE_FEASIBILITY": "Device Feasibility", "ACTIVE_COMPARATOR": "Active Comparator",
            "PLACEBO_COMPARATOR": "Placebo Comparator", "SHAM_COMPARATOR": "Sham Comparator",
            "NO_INTERVENTION": "No Intervention"}


def enum_label(value: Any) -> str | None:
    """API v2 enum -> legacy spelling: a known special case, else 'SOME_VALUE' -> 'Some value'."""
    if value is None:
        return None
    value = str(value)
    if value in _SPECIAL:
        return _SPECIAL[value]
    return value.replace("_", " ").capitalize()


def phase_label(phases: list[str] | None) -> str | None:
    """["PHASE2", "PHASE3"] -> "Phase 2/Phase 3" (the legacy XML spelling)."""
    if not phases:
        return None
    return "/".join(_PHASES.get(p, enum_label(p)) for p in phases)


_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


def legacy_date(value: str | None) -> str | None:
    """API v2 '2001-03' / '2013-10-31' -> the legacy spelling 'March 2001' / 'October 31, 2013'."""
    value = clean(value)
    m = _ISO_DATE.fullmatch(value or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return value
    month = _MONTHS[int(m.group(2)) - 1]
    return f"{month} {int(m.group(3))}, {m.group(1)}" if m.group(3) else f"{month} {m.group(1)}"


def _type(value: str | None) -> str | None:
    # API v2 says ESTIMATED where the legacy XML said Anticipated
    return "Anticipated" if value == "ESTIMATED" else enum_label(value)


def _date(struct: dict | None) -> tuple[str | None, str | None]:
    if not struct:
        return None, None
    return legacy_date(struct.get("date")), _type(struct.get("type"))


def _masking(design: dict) -> str | None:
    info = design.get("maskingInfo") or {}
    masking = info.get("masking")
    if masking is None:
        return None
    label = {"NONE": "None (Open Label)"}.get(masking, enum_label(masking))
    who = info.get("whoMasked") or []
    if who and masking != "NONE":
        label += " (" + ", ".join(enum_label(w) for w in who) + ")"
    return label


def map_study(study: dict, raw: str, where: str) -> dict[str, Any]:
    """One API v2 study object -> canonical record plus sources/raw fields. Raises BadRecord."""
    if not isinstance(study, dict):
        raise BadRecord(f"{where}: a study must be a JSON object, got {type(study).__name__}")
    ps = study.get("protocolSection")
    if not isinstance(ps, dict):
        raise BadRecord(f"{where}: missing protocolSection")
    ident = ps.get("identificationModule") or {}
    nct = ident.get("nctId")
    if not isinstance(nct, str) or not NCT_ID.fullmatch(nct):
        raise BadRecord(f"{where}: missing or invalid protocolSection.identificationModule.nctId ({nct!r})")
    try:
        status = ps.get("statusModule") or {}
        desc = ps.get("descriptionModule") or {}
        design = ps.get("designModule") or {}
        cond = ps.get("conditionsModule") or {}
        arms = ps.get("armsInterventionsModule") or {}
        outc = ps.get("outcomesModule") or {}
        elig = ps.get("eligibilityModule") or {}
        spons = ps.get("sponsorCollaboratorsModule") or {}
        rec = empty_record(nct)
        rec["brief_title"] = clean(ident.get("briefTitle"))
        rec["official_title"] = clean(ident.get("officialTitle"))
        rec["acronym"] = clean(ident.get("acronym"))
        rec["brief_summary"] = clean(desc.get("briefSummary"))
        rec["detailed_description"] = clean(desc.get("detailedDescription"))
        rec["phase"] = phase_label(design.get("phases"))
        rec["study_type"] = enum_label(design.get("studyType"))
        st = status.get("overallStatus")
        rec["overall_status"] = _STATUS.get(st, enum_label(st))
        rec["why_stopped"] = clean(status.get("whyStopped"))
        rec["start_date"], rec["start_date_type"] = _date(status.get("startDateStruct"))
        rec["completion_date"], rec["completion_date_type"] = _date(status.get("completionDateStruct"))
        rec["primary_completion_date"], rec["primary_completion_date_type"] = _date(
            status.get("primaryCompletionDateStruct"))
        enr = design.get("enrollmentInfo") or {}
        if enr.get("count") is not None:
            rec["enrollment"] = int(enr["count"])
            rec["enrollment_type"] = _type(enr.get("type"))
        rec["conditions"] = [c for c in cond.get("conditions") or [] if c]
        rec["keywords"] = [k for k in cond.get("keywords") or [] if k]
        rec["interventions"] = [
            {"type": enum_label(iv.get("type")), "name": clean(iv.get("name")),
             "description": clean(iv.get("description")), "other_names": list(iv.get("otherNames") or [])}
            for iv in arms.get("interventions") or []
        ]
        rec["arm_groups"] = [
            {"label": clean(a.get("label")), "type": enum_label(a.get("type")), "description": clean(a.get("description"))}
            for a in arms.get("armGroups") or []
        ]
        for key, src in (("primary_outcomes", "primaryOutcomes"), ("secondary_outcomes", "secondaryOutcomes")):
            rec[key] = [
                {"measure": clean(o.get("measure")), "time_frame": clean(o.get("timeFrame")),
                 "description": clean(o.get("description"))}
                for o in outc.get(src) or []
            ]
        rec["eligibility_criteria"] = clean(elig.get("eligibilityCriteria"))
        rec["gender"] = enum_label(elig.get("sex"))
        rec["minimum_age"] = clean(elig.get("minimumAge"))
        rec["maximum_age"] = clean(elig.get("maximumAge"))
        hv = elig.get("healthyVolunteers")
        rec["healthy_volunteers"] = None if hv is None else ("Accepts Healthy Volunteers" if hv else "No")
        lead = spons.get("leadSponsor") or {}
        rec["lead_sponsor"] = clean(lead.get("name"))
        rec["sponsor_class"] = enum_label(lead.get("class"))
        rec["collaborators"] = [c.get("name") for c in spons.get("collaborators") or [] if c.get("name")]
        di = design.get("designInfo") or {}
        rec["design_info"] = {
            "allocation": enum_label(di.get("allocation")),
            "intervention_model": enum_label(di.get("interventionModel")),
            "primary_purpose": enum_label(di.get("primaryPurpose")),
            "masking": _masking(di),
        }
        rec["has_results"] = bool(study.get("hasResults"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadRecord(f"{where} ({nct}): unexpected structure ({exc})") from None
    return set_provenance(rec, "ctgov_json", "json", raw)


def studies_in(doc: Any, where: str) -> list[tuple[str, dict]]:
    """A parsed JSON document -> [(where, study)]: a single study, a {"studies": [...]} page or a list."""
    if isinstance(doc, dict) and "studies" in doc:
        items = doc["studies"]
        if not isinstance(items, list):
            raise BadRecord(f"{where}: 'studies' must be a list")
        return [(f"{where}#studies[{i}]", s) for i, s in enumerate(items)]
    if isinstance(doc, list):
        return [(f"{where}[{i}]", s) for i, s in enumerate(doc)]
    if isinstance(doc, dict) and "protocolSection" in doc:
        return [(where, doc)]
    raise BadRecord(f"{where}: neither an API v2 study (protocolSection) nor a page of studies (studies)")


def parse_json_text(text: str, where: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """One JSON file's text -> (records, [(where, error)] for broken studies inside it).
    Raises BadRecord when the file itself is not usable."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRecord(f"{where}: not valid JSON ({exc})") from None
    records, errors = [], []
    items = studies_in(doc, where)
    for w, study in items:
        try:
            raw = text if len(items) == 1 and w == where else json.dumps(study, ensure_ascii=False)
            records.append(map_study(study, raw, w))
        except BadRecord as exc:
            errors.append((w, str(exc)))
    return records, errors


# ---- a --ctgov-json source, streamed ----

STREAM_MIN_BYTES = 16 << 20   # a JSON file or member this large is parsed study by study (ijson)
BATCH = 1000                  # records handed to the store at a time


def _iter_large(open_fn, where: str) -> Iterator[tuple[str, Any]]:
    """(where, study) from a large JSON document, incrementally: a list of studies or a page
    {"studies": [...]}. Raises BadRecord when the document is cut short or not JSON."""
    import ijson

    with open_fn() as fh:
        head = fh.read(4096).lstrip()
    if head[:3] == b"\xef\xbb\xbf":
        head = head[3:].lstrip()
    prefix = "item" if head[:1] == b"[" else "studies.item"
    i = -1
    try:
        with open_fn() as fh:
            for i, study in enumerate(ijson.items(fh, prefix, use_float=True)):
                yield (f"{where}[{i}]" if prefix == "item" else f"{where}#studies[{i}]"), study
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, ValueError) as exc:
        raise BadRecord(f"{where}: not valid JSON after study {i + 1} ({exc})") from None
    if i < 0 and prefix == "studies.item":
        raise BadRecord(f"{where}: a large JSON document that is not a page of studies (no 'studies' list)")


class JsonStream:
    """Iterate over batches of records from --ctgov-json arguments. Skipped studies are collected in
    `errors` [(container, member, message)]; `files` and `unique` (distinct NCT ids) are counted as it goes.
    `check()` afterwards raises IngestError when the sources held no usable study at all."""

    def __init__(self, paths: Iterable[Path], progress: Progress | None = None, batch: int = BATCH):
        self.paths = [Path(p) for p in paths]
        self.progress, self.batch = progress, batch
        self.errors: list[tuple[str, str, str]] = []
        self.files = 0
        self._ids: set[str] = set()
        self._buf: list[dict] = []

    @property
    def unique(self) -> int:
        return len(self._ids)

    def _add(self, rec: dict) -> list[dict] | None:
        self._ids.add(rec["nct_id"])
        self._buf.append(rec)
        if len(self._buf) >= self.batch:
            out, self._buf = self._buf, []
            return out
        return None

    def _studies(self, items: Iterable[tuple[str, Any]], container: str, member: str | None, where: str,
                 single_text: str | None = None) -> Iterator[list[dict]]:
        for w, study in items:
            try:
                raw = single_text if single_text is not None else json.dumps(study, ensure_ascii=False)
                rec = map_study(study, raw, w)
            except BadRecord as exc:
                self.errors.append((container, w if member is None else member + w[len(where):], str(exc)))
                continue
            out = self._add(rec)
            if out:
                yield out

    def _text(self, text: str, where: str, container: str, bulk: bool, member: str | None = None):
        try:
            doc = json.loads(text)
            items = studies_in(doc, where)
        except json.JSONDecodeError as exc:
            err = f"{where}: not valid JSON ({exc})"
            if not bulk:
                raise IngestError(err) from None
            self.errors.append((container, member or where, err))
            return
        except BadRecord as exc:
            if not bulk:
                raise IngestError(str(exc)) from None
            self.errors.append((container, member or where, str(exc)))
            return
        if not bulk and len(items) == 1 and items[0][0] == where:
            try:   # a single-study file whose study is unusable stops the command
                rec = map_study(items[0][1], text, where)
            except BadRecord as exc:
                raise IngestError(str(exc)) from None
            out = self._add(rec)
            if out:
                yield out
            return
        single = text if len(items) == 1 and items[0][0] == where else None
        yield from self._studies(items, container, member, where, single)

    def _large(self, open_fn, where: str, container: str, member: str | None) -> Iterator[list[dict]]:
        try:
            yield from self._studies(_iter_large(open_fn, where), container, member, where)
        except BadRecord as exc:
            self.errors.append((container, member or where, str(exc)))

    def __iter__(self) -> Iterator[list[dict]]:
        for p in self.paths:
            names = dir_files(p, "*.json", "*.json studies")
            if names is not None:
                for i, f in enumerate(names, 1):
                    if f.stat().st_size >= STREAM_MIN_BYTES:
                        yield from self._large(lambda f=f: open(f, "rb"), str(f), str(p), None)
                    else:
                        try:
                            text = decode_utf8(read_file(f), str(f))
                        except IngestError as exc:
                            self.errors.append((str(p), str(f), str(exc)))
                            continue
                        yield from self._text(text, str(f), str(p), True)
                    if self.progress and i % 200 == 0:
                        self.progress("json", i, len(names))
                self.files += len(names)
            elif is_zip(p):
                with open_zip(p) as zf:
                    infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(".json")]
                    if not infos:
                        raise IngestError(f"{p}: archive holds no *.json studies")
                    for i, info in enumerate(infos, 1):
                        yield from self._member(zf, p, info)
                        if self.progress and (i % 200 == 0 or i == len(infos)):
                            self.progress("json", i, len(infos))
                self.files += len(infos)
            else:
                if p.stat().st_size >= STREAM_MIN_BYTES:
                    yield from self._large(lambda: open(p, "rb"), str(p), str(p), None)
                else:
                    # a page of studies is bulk (one broken study is skipped); a single study file is not
                    yield from self._text(decode_utf8(read_file(p), str(p)), str(p), str(p), False)
                self.files += 1
        if self._buf:
            out, self._buf = self._buf, []
            yield out

    def _member(self, zf: zipfile.ZipFile, p: Path, info: zipfile.ZipInfo) -> Iterator[list[dict]]:
        name, where = info.filename, f"{p}:{info.filename}"
        if info.file_size >= STREAM_MIN_BYTES:
            yield from self._large(lambda: zf.open(name), where, str(p), name)
            return
        try:
            text = decode_utf8(zip_member(zf, name, where), where)
        except (BadRecord, IngestError) as exc:
            self.errors.append((str(p), name, str(exc)))
            return
        yield from self._text(text, where, str(p), True, name)

    def check(self) -> None:
        if self.files and not self._ids:
            first = f" ({len(self.errors)} skipped; first: {self.errors[0][2]})" if self.errors else ""
            raise IngestError(f"{', '.join(map(str, self.paths))}: no usable study record{first}")
